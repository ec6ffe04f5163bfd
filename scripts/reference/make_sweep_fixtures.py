"""Which sampler strings DiT's respacing accepts, for the sweep's launch checks.

Writes crates/sweep/tests/fixtures/respacing.json: for each string, whether
`space_timesteps(1000, s)` of dit_reference.py (which follows facebookresearch/DiT
diffusion/respace.py) accepts it and how many steps it keeps. A sweep refuses a run
whose `train.grid_sampling` or `eval.sampling` the reference rejects or that keeps no
step (a process of zero steps cannot sample).

Rerun from the repository root:

    .venv/bin/python scripts/reference/make_sweep_fixtures.py
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit_reference import space_timesteps  # noqa: E402

STRINGS = [
    "250", "1000", "1001", "1", "0", "0,0", "10,20,30", "334,333,333", "333,334,333",
    "500,500", "500,501", "ddim50", "ddim25", "ddim5", "ddim2", "ddim1", "ddim49", "ddim47",
    "ddim48", "ddim46", "ddim333", "ddim334", "ddim1000", "ddim1001", "ddim", "ddimx",
    "fast", "10,x", " 250 ", "100, 100",
]


def main():
    rows = []
    for s in STRINGS:
        try:
            kept = len(space_timesteps(1000, s))
            ok = kept > 0
        except ValueError:
            kept, ok = None, False
        rows.append({"sampling": s, "kept": kept, "valid": ok})
    out = os.path.join("crates", "sweep", "tests", "fixtures", "respacing.json")
    with open(out, "w") as f:
        json.dump({"made_by": "scripts/reference/make_sweep_fixtures.py (dit_reference.space_timesteps, T = 1000)", "rows": rows}, f, indent=1)
        f.write("\n")
    print(f"wrote {out}: {sum(r['valid'] for r in rows)} of {len(rows)} valid")


if __name__ == "__main__":
    main()
