"""Extensions added the way a contributor adds one: a module each, registering itself on
import. Tests load them into the real command line through sitecustomize (see
tests/unit/test_extension_points.py) and nothing in osbuilder names them."""
