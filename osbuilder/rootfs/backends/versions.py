"""Version ordering of the Debian and RPM package formats, as dpkg and rpm define it, for
`inspect --updates` to tell whether a source offers a newer version than the guest holds.
(apk's ordering lives with osbuilder's apk installer.)"""

from __future__ import annotations

import re


def _debian_order(char: str) -> int:
    # dpkg's lexical order: '~' before everything, even the end of the string; letters before
    # the other characters.
    if char == "~":
        return -1
    if char.isdigit():
        return 0
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _debian_part(left: str, right: str) -> int:
    """dpkg's comparison of one upstream-version or revision string."""
    i = j = 0
    while i < len(left) or j < len(right):
        first_diff = 0
        while (i < len(left) and not left[i].isdigit()) or (j < len(right) and not right[j].isdigit()):
            a = _debian_order(left[i]) if i < len(left) and not left[i].isdigit() else 0
            b = _debian_order(right[j]) if j < len(right) and not right[j].isdigit() else 0
            if a != b:
                return a - b
            i += 1
            j += 1
        while i < len(left) and left[i] == "0":
            i += 1
        while j < len(right) and right[j] == "0":
            j += 1
        while i < len(left) and left[i].isdigit() and j < len(right) and right[j].isdigit():
            if not first_diff:
                first_diff = ord(left[i]) - ord(right[j])
            i += 1
            j += 1
        if i < len(left) and left[i].isdigit():
            return 1
        if j < len(right) and right[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _debian_split(version: str) -> tuple[int, str, str]:
    epoch, colon, rest = version.partition(":")
    if not colon:
        epoch, rest = "0", version
    upstream, dash, revision = rest.rpartition("-")
    if not dash:
        upstream, revision = rest, ""
    return int(epoch) if epoch.isdigit() else 0, upstream, revision


def compare_debian(left: str, right: str) -> int:
    """<0, 0 or >0 as Debian version `left` sorts before, with or after `right` (dpkg
    --compare-versions)."""
    (epoch_a, up_a, rev_a), (epoch_b, up_b, rev_b) = _debian_split(left), _debian_split(right)
    if epoch_a != epoch_b:
        return epoch_a - epoch_b
    return _debian_part(up_a, up_b) or _debian_part(rev_a, rev_b)


_RPM_SEGMENT = re.compile(r"(~|\^|[0-9]+|[A-Za-z]+)")


def _rpm_part(left: str, right: str) -> int:
    """rpmvercmp: alternating runs of digits and letters; '~' sorts before anything, '^' after
    the end of the string but before any other segment."""
    a, b = _RPM_SEGMENT.findall(left), _RPM_SEGMENT.findall(right)
    for x, y in zip(a, b):
        if x != y:
            for mark, sign in (("~", -1), ("^", -1)):
                if x == mark or y == mark:
                    return sign if x == mark else -sign
            if x.isdigit() and y.isdigit():
                return (int(x) > int(y)) - (int(x) < int(y))
            if x.isdigit() != y.isdigit():
                return 1 if x.isdigit() else -1
            return (x > y) - (x < y)
    if len(a) == len(b):
        return 0
    longer, sign = (a, 1) if len(a) > len(b) else (b, -1)
    following = longer[min(len(a), len(b))]
    # What follows decides: '~' makes the longer one older, '^' makes it newer than the end.
    if following == "~":
        return -sign
    return sign


def compare_rpm(left: str, right: str) -> int:
    """<0, 0 or >0 as an RPM [epoch:]version-release `left` sorts before, with or after
    `right` (rpm's rpmvercmp on each part)."""
    def split(text: str) -> tuple[int, str, str]:
        epoch, colon, rest = text.partition(":")
        if not colon:
            epoch, rest = "0", text
        version, _, release = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch) if epoch.isdigit() else 0, version, release

    (epoch_a, ver_a, rel_a), (epoch_b, ver_b, rel_b) = split(left), split(right)
    if epoch_a != epoch_b:
        return (epoch_a > epoch_b) - (epoch_a < epoch_b)
    return _rpm_part(ver_a, ver_b) or _rpm_part(rel_a, rel_b)
