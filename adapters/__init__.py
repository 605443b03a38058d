"""Transports: they translate platform traffic into Events and Actions into platform calls. They never decide."""
