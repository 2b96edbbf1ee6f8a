"""The local stack: a moto server on 127.0.0.1 with the template's own resources, and the handler
draining its queue. Tooling for developers and tests; it never ships in the Lambda image."""
