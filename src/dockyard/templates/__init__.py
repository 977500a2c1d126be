"""Templates: manifest loading, typed parameters, rendering, archives and the template service."""
