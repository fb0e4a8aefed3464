"""qa-service: a streaming question-answering microservice."""

__version__ = "0.1.0"
