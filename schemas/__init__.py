"""Table contracts: Arrow schemas, grains, quality rules and versions, declared once."""
