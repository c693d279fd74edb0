"""Model loading: policies with LoRA and value head, tiny offline models."""
