"""netagent: a node-resident network diagnostic agent."""

__version__ = "0.1.0"
