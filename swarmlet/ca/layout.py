"""The names of a node's identity files (Docker Swarm's), in a module of their own so that
a reader that only hands them to ``ssl`` (the CLI) need not import ``cryptography``."""

CA_CERT_FILE = "swarm-root-ca.crt"
NODE_CERT_FILE = "swarm-node.crt"
NODE_KEY_FILE = "swarm-node.key"
