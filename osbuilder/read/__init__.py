"""Reading artifacts back without mounting them: what kind an artifact is (from its bytes),
one newc reader, and the guest's osbuilder.yaml out of any artifact osbuilder writes.
Used by `boot`, and by `inspect` and `check`."""
