"""Subsets DejaVu Sans into crates/report/assets/DejaVuSans-report.ttf.

The report draws its PNG figures with plotters + ab_glyph, which needs a TrueType font
in memory; CI machines may have no fonts installed, so a small subset is embedded in the
crate. DejaVu Sans is under the Bitstream Vera licence (+ public-domain DejaVu changes),
which allows modified copies whose names contain neither "Bitstream" nor "Vera"
(DejaVu's does not); the licence is copied beside the font.

Glyphs kept: printable ASCII, Latin-1, and the few symbols the report's labels use
(minus, multiplication and middle dot, approx, <=, >=, dashes, ellipsis, superscripts,
Greek letters for fit parameters).

Run once (needs fontTools, which matplotlib pulls in):
    .venv/bin/python scripts/reference/make_report_font.py [/path/to/DejaVuSans.ttf]
"""

import sys
from pathlib import Path

from fontTools import subset

src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
out = Path(__file__).resolve().parents[2] / "crates/report/assets/DejaVuSans-report.ttf"

codepoints = list(range(0x20, 0x7F)) + list(range(0xA0, 0x100))
codepoints += [0x2212, 0x2248, 0x2264, 0x2265, 0x2013, 0x2014, 0x2026, 0x2022, 0x2192,
               0x2070, 0x00B9, 0x00B2, 0x00B3, 0x2074, 0x2075, 0x2076, 0x2077, 0x2078,
               0x2079, 0x207B, 0x03B1, 0x03B2, 0x03B4, 0x03C1, 0x03C3, 0x221A, 0x221E]

opts = subset.Options()
opts.layout_features = []       # plotters/ab_glyph do no shaping
opts.hinting = False            # rasterised without hinting anyway
opts.name_IDs = ["*"]           # keep the copyright and licence names
opts.notdef_outline = True
font = subset.load_font(src, opts)
sub = subset.Subsetter(opts)
sub.populate(unicodes=codepoints)
sub.subset(font)
subset.save_font(font, str(out), opts)
print(f"wrote {out} ({out.stat().st_size} bytes, {len(codepoints)} code points)")
