"""The forms of recipe strings that become paths or arguments (names, packages, mirrors),
shared by the recipe parser, the backends' own tables and the command line."""

from __future__ import annotations

import re
import urllib.parse

from osbuilder.foundation.documents import quoted
from osbuilder.foundation.errors import UserError

# Recipe strings that become path components (cache entries, lock files) or package-manager
# arguments: letters, digits and the punctuation real names use, nothing a shell or a path
# would read as more (no '/', no leading '.', no spaces, quotes, ';', '$', '|', '&', '`').
NAME_FORM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]*")
PACKAGE_FORM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~:-]*")
PATTERN_FORM = re.compile(r"[A-Za-z0-9*?\[][A-Za-z0-9._+~:*?\[\]!-]*")  # [slim] packages are globs
MIRROR_SCHEMES = ("http", "https", "file")


def check_plain_name(source: str, key: str, value: str, form: re.Pattern[str] = NAME_FORM) -> None:
    if not form.fullmatch(value) or len(value) > 200:
        raise UserError(f"{source}: {key} {quoted(value)} is not a plain name (letters, digits, . _ + ~ -)",
                        f"fix {key} in {source}")


def check_mirror(source: str, value: str) -> None:
    """A mirror URL: http(s) with a host, or file: with a path; no spaces, quotes or controls."""
    parsed = urllib.parse.urlsplit(value)
    plain = value.isprintable() and not any(c in value for c in " \"'`\\<>{}|^")
    if not plain or parsed.scheme not in MIRROR_SCHEMES or (parsed.scheme != "file" and not parsed.hostname) \
            or (parsed.scheme == "file" and not parsed.path.startswith("/")):
        raise UserError(f"{source}: mirror {quoted(value)} is not an http, https or file URL",
                        "write it as http://host/path")
