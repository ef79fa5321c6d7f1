#!/usr/bin/env python3
"""Build models/imagenet_classes.txt: the 1000 ImageNet-1k class names in index order.

Output format: 1000 lines, line i (0-based) is class index i of the
classifier's logits, written as

    <wnid>\\t<lemma list>        e.g.  n01440764\\ttench, Tinca tinca

Source: the PyPI wheel of `timm` (Apache-2.0), which ships
  timm/data/_info/imagenet_synsets.txt         1000 WordNet ids in index order
  timm/data/_info/imagenet_synset_to_lemma.txt  "<wnid>\\t<lemmas>" for ~21k synsets
The wheel is fetched with `pip download --no-deps` into .cache/wheels/ (git-ignored)
and read as a zip file; timm itself is NOT installed. Only the Python standard
library is needed.

Usage:
    python3 scripts/imagenet_classes.py [--out models/imagenet_classes.txt]
                                        [--timm-version 1.0.31]
"""

import argparse
import glob
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEEL_DIR = os.path.join(ROOT, ".cache", "wheels")
SYNSETS = "timm/data/_info/imagenet_synsets.txt"
LEMMAS = "timm/data/_info/imagenet_synset_to_lemma.txt"


def fetch_wheel(version: str) -> str:
    """Return the path of the timm wheel, downloading it with pip if needed."""
    pattern = os.path.join(WHEEL_DIR, f"timm-{version}-*.whl")
    found = sorted(glob.glob(pattern))
    if not found:
        os.makedirs(WHEEL_DIR, exist_ok=True)
        print(f"imagenet_classes: downloading timm=={version} into .cache/wheels/ ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--disable-pip-version-check", "--only-binary=:all:",
             "-d", WHEEL_DIR, f"timm=={version}"],
            check=True,
        )
        found = sorted(glob.glob(pattern))
    if not found:
        sys.exit(f"imagenet_classes: no wheel matching {pattern} after pip download")
    return found[0]


def build_lines(wheel: str) -> list:
    """Read the two tables from the wheel and join them into '<wnid>\\t<lemmas>' lines."""
    with zipfile.ZipFile(wheel) as zf:
        synsets = zf.read(SYNSETS).decode("utf-8").split()
        lemma_of = {}
        for line in zf.read(LEMMAS).decode("utf-8").splitlines():
            if not line.strip():
                continue
            wnid, lemmas = line.split("\t", 1)
            lemma_of[wnid] = lemmas.strip()
    if len(synsets) != 1000 or len(set(synsets)) != 1000:
        sys.exit(f"imagenet_classes: expected 1000 distinct synsets, got {len(synsets)}")
    missing = [w for w in synsets if w not in lemma_of]
    if missing:
        sys.exit(f"imagenet_classes: no lemma for {len(missing)} synsets, e.g. {missing[:3]}")
    return [f"{wnid}\t{lemma_of[wnid]}" for wnid in synsets]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "imagenet_classes.txt"),
                    help="output file (default: models/imagenet_classes.txt)")
    ap.add_argument("--timm-version", default="1.0.31",
                    help="timm wheel version to read the tables from (default: 1.0.31)")
    args = ap.parse_args()

    lines = build_lines(fetch_wheel(args.timm_version))
    # Sanity anchors: the standard ImageNet-1k order starts with tench and ends with toilet tissue.
    assert lines[0].startswith("n01440764\ttench"), lines[0]
    assert lines[999].startswith("n15075141\ttoilet tissue"), lines[999]

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    print(f"imagenet_classes: wrote {len(lines)} classes to {os.path.relpath(args.out, os.getcwd())}")


if __name__ == "__main__":
    main()
