"""trainserve: the HTTP front end, its data layer and its command line."""
