"""Users, roles, passwords, API tokens and the actor that every request runs as."""
