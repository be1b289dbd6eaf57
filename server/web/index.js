// The start page: what each page is for, in the visitor's language.
import {langToggle, useCatalog} from "/static/i18n.js";
import catalog from "/static/catalog/index.js";

useCatalog(catalog);
langToggle(document.querySelector('[data-testid="lang"]'));
document.body.dataset.ready = "1";
