"""One module per resource; each is a thin mapping of HTTP onto services.api's modules."""
