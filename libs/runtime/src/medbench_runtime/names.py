"""Names shown on the public leaderboard (model name, version, organisation, parameter count).

display_text() is the rule at CreateSubmission (and again at publication, for names stored
before it): the text is NFKC-normalised (full-width and other compatibility forms become their
plain form), and refused when it holds control, bidirectional, invisible or format characters
(category Cf, line and paragraph separators, private-use and unassigned code points, tag
characters, Hangul fillers and other blank-looking letters), or when it is not empty but shows
nothing. A zero-width joiner is kept inside an emoji sequence only (symbol ZWJ symbol), and
variation selectors 15 and 16 only after a visible character.

skeleton() is what a name looks like: NFKC, accents dropped, Cyrillic, Greek and other
look-alikes of Latin letters mapped to them, case folded, spaces, punctuation and symbols removed,
and the look-alikes within Latin (i, l, 1; o, 0; rn, m; vv, w) merged. Two names with one
skeleton can be mistaken for each other on the board.
"""

from __future__ import annotations

import unicodedata

from medbench_runtime.errors import InvalidArgument

BIDI_CONTROLS = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
)
ZWJ = "\u200d"
EMOJI_PRESENTATION = frozenset("\ufe0e\ufe0f")
# Letters, marks and symbols that draw nothing (or a blank) although their category is not a
# space or format one: Hangul fillers, the braille blank, the combining grapheme joiner, Khmer
# inherent vowels, Mongolian variation selectors and the other variation selectors.
BLANK_LOOKING = frozenset(
    "\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5\u180b\u180c\u180d\u180f"
    + "".join(chr(c) for c in range(0xFE00, 0xFE0E))
    + "".join(chr(c) for c in range(0xE0100, 0xE01F0))
)
# Categories refused anywhere: format (Cf), line and paragraph separators, private use,
# surrogates and unassigned code points (they may draw as anything once assigned).
REFUSED_CATEGORIES = frozenset({"Cf", "Zl", "Zp", "Co", "Cs", "Cn"})
VISIBLE_CATEGORIES = ("L", "N", "P", "S")


def _pairs(lookalikes: str, latin: str) -> dict[str, str]:
    return dict(zip(lookalikes, latin, strict=True))


# Look-alikes of Latin letters in other scripts, mapped before case folding (upper and lower
# case look different: Greek capital eta is an H, small eta an n).
_LOOKALIKES = str.maketrans(
    {
        **_pairs("АВЕКМНОРСТХУЅІЈԚԜҮӀҺ", "abekmhopctxysijqwylh"),  # Cyrillic capitals
        **_pairs("авекмнорстхуѕіјԁԛԝүӏһпгь", "abekmhopctxysijdqwylhnrb"),  # Cyrillic small
        **_pairs("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "abezhikmnoptyx"),  # Greek capitals
        **_pairs("αβγεηικνορτυχωμ", "abyeniknoptuxwu"),  # Greek small
        **_pairs("ıȷɑɡօՕսհ", "ijagoouh"),  # Latin and Armenian extras
    }
)
# Within Latin: what looks the same once case is gone (after folding and the map above).
_LATIN = str.maketrans("i10", "llo")
_SEQUENCES = (("rn", "m"), ("vv", "w"))


def _category(c: str) -> str:
    return unicodedata.category(c)


def _visible(c: str) -> bool:
    return _category(c).startswith(VISIBLE_CATEGORIES) and c not in BLANK_LOOKING


def _emoji_joiner(text: str, i: int) -> bool:
    """Whether the ZWJ at i joins two symbols (an emoji sequence such as a profession)."""
    before = text[i - 1] if i > 0 else ""
    after = text[i + 1] if i + 1 < len(text) else ""
    joined_from = before in EMOJI_PRESENTATION or _category(before or " ") in ("So", "Sk")
    return joined_from and _category(after or " ") == "So"


def _hidden(text: str) -> tuple[int, str] | None:
    """(position, character) of the first invisible or format character, if any."""
    for i, c in enumerate(text):
        if c == ZWJ and _emoji_joiner(text, i):
            continue
        if c in EMOJI_PRESENTATION and i > 0 and _visible(text[i - 1]):
            continue
        if _category(c) in REFUSED_CATEGORIES or c in BLANK_LOOKING or c in EMOJI_PRESENTATION:
            return i, c
    return None


def _named(c: str) -> str:
    name = unicodedata.name(c, "")
    return f"U+{ord(c):04X} {name}".rstrip()


def display_text(field: str, value: str, most: int) -> str:
    """value as it is stored and shown (NFKC), or INVALID_ARGUMENT naming the field and why."""
    if len(value) > most:
        raise InvalidArgument(f"{field} is longer than {most} characters")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise InvalidArgument(f"{field} contains control characters")
    if any(c in BIDI_CONTROLS for c in value):
        # Shown on the public leaderboard: an override would display the name reordered.
        raise InvalidArgument(
            f"{field} contains bidirectional control characters (U+202A-U+202E, "
            "U+2066-U+2069, U+200E, U+200F, U+061C)"
        )
    text = unicodedata.normalize("NFKC", value)
    if len(text) > most:
        raise InvalidArgument(f"{field} is longer than {most} characters once normalised (NFKC)")
    # The text as sent first (the error names the character the caller wrote), then as shown.
    hidden = _hidden(value) or _hidden(text)
    if hidden is not None:
        at, c = hidden
        raise InvalidArgument(
            f"{field} contains an invisible or format character ({_named(c)}, at position {at})"
        )
    if text and not any(_visible(c) for c in text):
        raise InvalidArgument(f"{field} shows nothing: it holds no visible character")
    return text


def skeleton(text: str) -> str:
    """What text looks like (see the module's docstring); "" when it shows no letter or digit."""
    decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text))
    bare = "".join(c for c in decomposed if not _category(c).startswith(("M", "C")))
    folded = bare.translate(_LOOKALIKES).casefold().translate(_LATIN)
    kept = "".join(c for c in folded if _category(c).startswith(("L", "N")))
    for sequence, same in _SEQUENCES:
        kept = kept.replace(sequence, same)
    return kept
