"""The parts that exist only when several nodes serve one deployment (docs/scaleout.md).

- `presence`: viewer counts and like totals summed over the nodes (Redis)
- `replica`: this node's copy of a room following the events other nodes published, and
  chat ids that do not collide across nodes
- `cascade`: the media origin → edge pulls between nodes, and the URL other nodes reach this
  one at
- `notices`: the change notices that keep each feature's working copy in step (and `NoSync`,
  what a feature gets when it is alone)

What a feature does differently in a cluster is its store's capability or its follower
(server/commerce/cluster.py, server/community/cluster.py), not a module here.
"""
