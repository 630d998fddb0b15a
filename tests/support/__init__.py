"""Helpers the tests share: clients, running nodes, test hosts, Synapse, browsers."""
