// The start page: what each page is for, in the visitor's language.
import {langToggle, loadCatalog} from "/static/i18n.js";

await loadCatalog("index");
langToggle(document.querySelector('[data-testid="lang"]'));
document.body.dataset.ready = "1";
