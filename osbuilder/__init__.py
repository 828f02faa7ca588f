"""osbuilder: build guest operating systems for lightweight-VM container sandboxes."""

__version__ = "0.1.0"
