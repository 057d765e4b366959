"""The pure policy engine: rules, request attributes, evaluation into a template, TTLs."""
