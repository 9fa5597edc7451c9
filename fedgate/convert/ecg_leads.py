"""ECG lead names -> their codes in PS3.16 CID 3001 "ECG Leads" (MDC, ISO/IEEE 11073-10101).

Names are matched ignoring case and spaces, so WFDB records (PTB-XL writes ``i``, ``avr``,
``v1``; the PTB database adds the Frank leads ``vx``, ``vy``, ``vz``) and spreadsheet headers
(``I``, ``aVR``, ``V1``) both work. The original name is kept as the channel label.
"""

from __future__ import annotations

from pydicom.sr.coding import Code

MDC = "MDC"

_LEADS: dict[str, Code] = {
    "I": Code("2:1", MDC, "Lead I"),
    "II": Code("2:2", MDC, "Lead II"),
    "III": Code("2:61", MDC, "Lead III"),
    "AVR": Code("2:62", MDC, "aVR, augmented voltage, right"),
    "AVL": Code("2:63", MDC, "aVL, augmented voltage, left"),
    "AVF": Code("2:64", MDC, "aVF, augmented voltage, foot"),
    "-AVR": Code("2:65", MDC, "−aVR"),
    "V1": Code("2:3", MDC, "Lead V1"),
    "V2": Code("2:4", MDC, "Lead V2"),
    "V3": Code("2:5", MDC, "Lead V3"),
    "V4": Code("2:6", MDC, "Lead V4"),
    "V5": Code("2:7", MDC, "Lead V5"),
    "V6": Code("2:8", MDC, "Lead V6"),
    "V7": Code("2:9", MDC, "Lead V7"),
    "V8": Code("2:66", MDC, "Lead V8"),
    "V9": Code("2:67", MDC, "Lead V9"),
    "V2R": Code("2:10", MDC, "Lead V2R"),
    "V3R": Code("2:11", MDC, "Lead V3R"),
    "V4R": Code("2:12", MDC, "Lead V4R"),
    "V5R": Code("2:13", MDC, "Lead V5R"),
    "V6R": Code("2:14", MDC, "Lead V6R"),
    "V7R": Code("2:15", MDC, "Lead V7R"),
    "X": Code("2:16", MDC, "Lead X"),
    "Y": Code("2:17", MDC, "Lead Y"),
    "Z": Code("2:18", MDC, "Lead Z"),
    # The PTB database's names for the Frank orthogonal leads.
    "VX": Code("2:16", MDC, "Lead X"),
    "VY": Code("2:17", MDC, "Lead Y"),
    "VZ": Code("2:18", MDC, "Lead Z"),
    # MIT-BIH style modified limb leads (MLII is the usual Holter lead).
    "MLI": Code("2:126", MDC, "Modified limb lead"),
    "MLII": Code("2:126", MDC, "Modified limb lead"),
    "MLIII": Code("2:126", MDC, "Modified limb lead"),
}

#: The 12 standard leads, in the order 12-lead ECG viewers expect.
STANDARD_12 = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def lead_code(name: str) -> Code | None:
    """The CID 3001 code of a lead name, or None if the name is not a known lead."""
    return _LEADS.get(name.replace(" ", "").upper())


#: For error messages: the names this module knows, briefly.
KNOWN_LEADS_TEXT = "I, II, III, aVR, aVL, aVF, -aVR, V1-V9, V2R-V7R, X/Y/Z (vx/vy/vz), MLI-MLIII"
