#!/usr/bin/env bash
# Build the "uploads" workload: genuine photographs shipped in registry
# packages, re-encoded the way phones and cameras upload them.
#
#   bash scripts/fetch_uploads.sh
#
# Idempotent: when data/uploads/ is already complete for this recipe (every
# file listed in SHA256SUMS present and intact) it does nothing.
#
# Sources (one folder per source; see docs/workloads.md for why each was judged
# to be photographs, and which candidates were rejected as artwork):
#   enlightenment   Debian enlightenment-data        13 photos, 3840x2160-class
#   lomiri          Debian lomiri-wallpapers-16.04/-20.04   14 photos, 1.5-20 MP
#   lxqt            Debian lxqt-themes               11 photos, 2-6 MP
#   efl-elementary  Debian libelementary-data        11 photos, 0.1-8 MP
#   digikam         Debian digikam-data               1 photo (iPhone 7, 12 MP)
#   sddm-maldives   Debian sddm-theme-maldives        1 photo, 4.5 MP
#   palapeli        Debian palapeli-data              5 photos, 0.7-2 MP
#   tuxpaint        Debian tuxpaint-data             19 photos, 0.3-1.1 MP
#   kphotoalbum     Debian kphotoalbum               24 photos, 0.24-0.48 MP
#   skimage         Debian python3-skimage            4 photos, 0.14-0.27 MP
#   aib-street      PyPI ai-benchmark==0.1.2        100 photos, 1024x682
#   aib-indoor      PyPI ai-benchmark==0.1.2         30 photos, <= 800 px
#
# Result (relative to the repository root):
#   data/uploads/<source>/<name>.jpg         native-size upload (photos above
#                                            12 MP are shrunk to max side 4032)
#   data/uploads/<source>/<name>_<side>.jpg  second, phone-resolution upload of
#                                            photos whose max side is >= 2400
#   data/uploads/<source>/LICENSE*           the packages' licence/credit text
#   data/uploads/MANIFEST.csv                one row per upload file
#   data/uploads/SHA256SUMS                  for the idempotence check
#
# Never upscaled. JPEG quality 85-98, 4:2:0 or 4:4:4, optimised or not, ~25 %
# stored rotated with EXIF Orientation 6/8/3 (applying the tag gives the
# upright photo, as a phone does), all drawn from a fixed seed: the output is
# reproducible byte for byte with the pinned Pillow.
#
# Reserved photo sets (Debian mate-backgrounds and plasma-workspace-wallpapers,
# the foolbox samples, darknet/YOLO sample photos) are never downloaded or used.
#
# Needs: python3 (with venv), apt-get + dpkg-deb (Debian), network access to
# the Debian archive and PyPI. Run as root on a fresh machine (it runs
# `apt-get update` itself when the package lists are missing). Downloads are
# cached in .cache/debs-uploads/, .cache/wheels/ and the Pillow venv in
# .cache/venv-uploads/ (all git-ignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
DEB_DIR="$CACHE/debs-uploads"
WHEEL_DIR="$CACHE/wheels"
VENV="$CACHE/venv-uploads"
OUT="$ROOT/data/uploads"

# Bump RECIPE whenever the selection or the synthesis below changes.
RECIPE="uploads-v1"
PILLOW_VERSION="11.3.0"
AIB_PKG="ai-benchmark==0.1.2"
AIB_WHEEL="ai_benchmark-0.1.2-py3-none-any.whl"

# Debian (bookworm) packages, pinned. If a pinned version has left the archive
# the candidate version is used with a warning; the content checks (file
# names, pixel sizes, counts) still have to pass.
DEBS=(
  "enlightenment-data=0.25.4-2"
  "lomiri-wallpapers-16.04=20.04.0-2"
  "lomiri-wallpapers-20.04=20.04.0-2"
  "lxqt-themes=1.2.0-1"
  "libelementary-data=1.26.3-1"
  "digikam-data=4:7.9.0-1"
  "sddm-theme-maldives=0.19.0-5"
  "palapeli-data=4:22.12.3-1"
  "tuxpaint-data=1:0.9.28-sdl2-1"
  "kphotoalbum=5.9.1-1"
  "python3-skimage=0.19.3-8"
)

log() { echo "fetch_uploads: $*"; }
die() { echo "fetch_uploads: error: $*" >&2; exit 1; }

START=$(date +%s)

# ---------------------------------------------------------------- up to date?
if [[ -f "$OUT/.recipe" && -f "$OUT/SHA256SUMS" && -f "$OUT/MANIFEST.csv" ]] \
   && [[ "$(cat "$OUT/.recipe")" == "$RECIPE pillow-$PILLOW_VERSION" ]]; then
  rows=$(( $(wc -l < "$OUT/MANIFEST.csv") - 1 ))
  sums=$(wc -l < "$OUT/SHA256SUMS")
  files=$(find "$OUT" -mindepth 2 -type f -name '*.jpg' | wc -l)
  if [[ "$rows" -eq "$sums" && "$files" -eq "$rows" ]] \
     && (cd "$OUT" && sha256sum --quiet --strict -c SHA256SUMS >/dev/null 2>&1); then
    log "data/uploads/ already complete ($rows files, recipe $RECIPE)"
    exit 0
  fi
  log "data/uploads/ is incomplete or stale: rebuilding"
fi

command -v dpkg-deb >/dev/null || die "dpkg-deb not found (this script needs a Debian machine)"
command -v apt-get >/dev/null || die "apt-get not found (this script needs a Debian machine)"

# ---------------------------------------------------------------- Pillow venv
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtualenv .cache/venv-uploads ..."
  python3 -m venv "$VENV" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
fi
if ! "$VENV/bin/python" -c "import sys, PIL; sys.exit(PIL.__version__ != '$PILLOW_VERSION')" 2>/dev/null; then
  log "installing Pillow==$PILLOW_VERSION into .cache/venv-uploads ..."
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "Pillow==$PILLOW_VERSION"
fi

# ---------------------------------------------------------------- downloads
mkdir -p "$DEB_DIR" "$WHEEL_DIR"
apt_updated=0
apt_update_once() {
  if [[ "$apt_updated" -eq 0 ]]; then
    log "running apt-get update (package lists missing or without a pinned version) ..."
    apt-get update -qq || die "apt-get update failed"
    apt_updated=1
  fi
}
# cached_deb PKG VERSION -> path of a cached .deb of exactly that version
cached_deb() {
  local f
  for f in "$DEB_DIR/${1}_"*.deb; do
    [[ -f "$f" ]] || continue
    if [[ "$(dpkg-deb -f "$f" Package)" == "$1" && "$(dpkg-deb -f "$f" Version)" == "$2" ]]; then
      echo "$f"
      return 0
    fi
  done
  return 1
}

DEBMAP="$(mktemp)"
trap 'rm -f "$DEBMAP"' EXIT
for spec in "${DEBS[@]}"; do
  pkg="${spec%%=*}"
  ver="${spec#*=}"
  if path="$(cached_deb "$pkg" "$ver")"; then
    printf '%s\t%s\t%s\n' "$pkg" "$ver" "$path" >>"$DEBMAP"
    continue
  fi
  if ! apt-cache show "$pkg=$ver" >/dev/null 2>&1; then
    apt_update_once
  fi
  if apt-cache show "$pkg=$ver" >/dev/null 2>&1; then
    log "downloading $pkg $ver ..."
    (cd "$DEB_DIR" && apt-get download -qq -o APT::Sandbox::User=root "$pkg=$ver") \
      || die "apt-get download $pkg=$ver failed"
  else
    ver="$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')"
    [[ -n "$ver" && "$ver" != "(none)" ]] || die "Debian package $pkg is not available"
    log "WARNING: $spec is no longer in the archive, using $pkg $ver (content is still checked)"
    if ! cached_deb "$pkg" "$ver" >/dev/null; then
      (cd "$DEB_DIR" && apt-get download -qq -o APT::Sandbox::User=root "$pkg=$ver") \
        || die "apt-get download $pkg=$ver failed"
    fi
  fi
  path="$(cached_deb "$pkg" "$ver")" || die "$pkg $ver not found in $DEB_DIR after download"
  printf '%s\t%s\t%s\n' "$pkg" "$ver" "$path" >>"$DEBMAP"
done

if [[ ! -f "$WHEEL_DIR/$AIB_WHEEL" ]]; then
  log "downloading $AIB_PKG into .cache/wheels/ ..."
  "$VENV/bin/python" -m pip download --quiet --no-deps --disable-pip-version-check \
    -d "$WHEEL_DIR" "$AIB_PKG"
fi
[[ -f "$WHEEL_DIR/$AIB_WHEEL" ]] || die "$AIB_WHEEL not found in $WHEEL_DIR after pip download"

# ---------------------------------------------------------------- build
# Leftovers of an interrupted run (the result itself is only ever renamed into place).
rm -rf "$ROOT"/data/.tmp-uploads-* "$OUT.old"
log "building data/uploads/ (recipe $RECIPE, Pillow $PILLOW_VERSION) ..."
"$VENV/bin/python" - "$ROOT" "$DEBMAP" "$WHEEL_DIR/$AIB_WHEEL" "$RECIPE" "$PILLOW_VERSION" <<'PY'
import csv, gzip, hashlib, io, multiprocessing, os, random, re, shutil, struct
import subprocess, sys, tarfile, tempfile, zipfile
import xml.etree.ElementTree as ET

import PIL
from PIL import Image, ImageOps

ROOT, DEBMAP, AIB_WHEEL, RECIPE, PILLOW_VERSION = sys.argv[1:6]
OUT = os.path.join(ROOT, "data", "uploads")
SEED = "adacompress-uploads-v1"
MAX_NATIVE_PIXELS = 12_000_000     # above this, the native upload is shrunk...
PHONE_MAX_SIDE = 4032              # ...to a 12 MP phone's max side
SECOND_VARIANT_MIN_SIDE = 2400     # photos this large also get a phone-size copy
SECOND_VARIANT_SIDES = (3264, 2592, 2048)

if PIL.__version__ != PILLOW_VERSION:
    sys.exit(f"Pillow {PIL.__version__} found, {PILLOW_VERSION} pinned")


def log(msg):
    print(f"fetch_uploads: {msg}", flush=True)


DEBS = {}
with open(DEBMAP) as f:
    for line in f:
        pkg, ver, path = line.rstrip("\n").split("\t")
        DEBS[pkg] = (ver, path)

# ------------------------------------------------------------------ selection
# (file name, width, height[, licence]) of each ORIGINAL as stored in the
# package. Names and pixel sizes are checked; a mismatch stops the build.
E_DIR = "usr/share/enlightenment/data/backgrounds/"
E_FILES = [  # largest JPEG inside each Edje file; artwork and Foggy-Trees left out
    ("Bamboo.edj", 3840, 2160), ("God-Rays.edj", 3840, 2160),
    ("Green-Maple.edj", 3840, 2160), ("Lichen-Branches.edj", 3840, 2160),
    ("Mountain.edj", 3840, 2160), ("Peaks.edj", 3840, 2160),
    ("Red-Maple.edj", 3840, 2160), ("Sea-of-Lanterns.edj", 3840, 2059),
    ("Snow-Trees.edj", 3840, 2160), ("Spruce-Needles.edj", 3838, 2160),
    ("Sunset-Clouds.edj", 3840, 2160), ("White-Flower.edj", 3840, 2160),
    ("Yellow-Flower.edj", 3840, 2160),
]
L16 = "usr/share/backgrounds/"
LOMIRI_FILES = [  # (package, file, w, h, licence) from the Debian copyright file
    ("lomiri-wallpapers-16.04", "Bridge_by_Sander_Klootwijk.jpg", 4352, 2448, "CC-BY-SA-4.0 (Sander Klootwijk)"),
    ("lomiri-wallpapers-16.04", "Dragonfly_by_Bolly.jpg", 4224, 3168, "CC-BY-SA-4.0 (Bolly)"),
    ("lomiri-wallpapers-16.04", "Picture_0B_by_freespace.jpg", 2572, 1740, "CC-BY-4.0 (Trevor Freespace)"),
    ("lomiri-wallpapers-16.04", "Picture_1A_by_freespace.jpg", 1365, 1074, "CC-BY-4.0 (Trevor Freespace)"),
    ("lomiri-wallpapers-16.04", "Wine_by_Jakkub_Mede.jpg", 2560, 3837, "CC-BY-4.0 (Jakub Mede)"),
    ("lomiri-wallpapers-16.04", "aitzgorri_by_Aitzol_Berasategi.jpg", 3088, 2056, "CC-BY-4.0 (Aitzol Berasategi)"),
    ("lomiri-wallpapers-16.04", "free_by_Peter_Nerlich.jpg", 2880, 2160, "CC-BY-SA-4.0 (Peter Nerlich)"),
    ("lomiri-wallpapers-16.04", "friends_by_Aitzol_Berasategi.jpg", 2056, 3088, "CC-BY-4.0 (Aitzol Berasategi)"),
    ("lomiri-wallpapers-16.04", "greentock_by_Peter_Nerlich.jpg", 2880, 2160, "CC-BY-SA-4.0 (Peter Nerlich)"),
    ("lomiri-wallpapers-16.04", "life_by_Aitzol_Berasategi.jpg", 3088, 2056, "CC-BY-4.0 (Aitzol Berasategi)"),
    ("lomiri-wallpapers-16.04", "picosdeeuropa_by_Aitzol_Berasategi.jpg", 3264, 2448, "CC-BY-4.0 (Aitzol Berasategi)"),
    ("lomiri-wallpapers-16.04", "seeding_by_Clements_Engelhardt.jpg", 5312, 2988, "CC0-1.0 (Clemens Engelhardt)"),
    ("lomiri-wallpapers-16.04", "sunset_by_Aitzol_Berasategi.jpg", 4272, 2848, "CC-BY-4.0 (Aitzol Berasategi)"),
    ("lomiri-wallpapers-20.04", "Kleiber_by_Lukas_Baubkus.jpg", 6028, 3391, "CC-BY-SA-3.0 (Lukas Baubkus)"),
]
LXQT_DIR = "usr/share/lxqt/wallpapers/"
LXQT_FILES = [
    ("Butterfly-Kenneth-Wimer.jpg", 1920, 1278), ("Valendas.png", 1920, 1277),
    ("after-the-rain.jpg", 3000, 1993), ("appleflower.png", 3000, 1993),
    ("beam.png", 2592, 1944), ("butterfly.png", 3000, 1994),
    ("cloud.png", 2048, 1536), ("drop.png", 2000, 1333),
    ("flowers.png", 3000, 1993), ("fog.jpg", 2048, 1536),
    ("this-is-not-windows.jpg", 2048, 1536),
]
ELM_DIR = "usr/share/elementary/images/"
ELM_FILES = [  # panel_01 and wood_01 (flat textures) left out
    ("insanely_huge_test_image.jpg", 3264, 2448), ("mystrale.jpg", 300, 451),
    ("mystrale_2.jpg", 1000, 665), ("twofish.jpg", 640, 640),
    ("plant_01.jpg", 640, 640), ("rock_01.jpg", 640, 640), ("rock_02.jpg", 640, 640),
    ("sky_01.jpg", 640, 640), ("sky_02.jpg", 640, 640), ("sky_03.jpg", 640, 640),
    ("sky_04.jpg", 640, 640),
]
PAL_DIR = "usr/share/palapeli/collection/"
PAL_FILES = [  # licence from each puzzle's .desktop file
    ("castle-maintenon.jpg", 1024, 681, "GFDL (Eric Pouhier, Wikimedia Commons)"),
    ("cincinnati-bridge.jpg", 1302, 953, "Public domain (Derek Jensen, Wikimedia Commons)"),
    ("citrus-fruits.jpg", 1350, 890, "Public domain (US Department of Agriculture)"),
    ("european-honey-bee.jpg", 1620, 1280, "Public domain (John Severns, Wikimedia Commons)"),
    ("panther-chameleon-female.jpg", 1306, 1530, "GFDL (B. Navez and others, Wikimedia Commons)"),
]
TUX_DIR = "usr/share/tuxpaint/templates/"
TUX_FILES = [
    ("burnt_bark.jpg", 960, 638), ("cliff.jpg", 1296, 864), ("corn_maze.jpg", 1024, 680),
    ("jellyfish.jpg", 1280, 768), ("lighthouse.jpg", 638, 960), ("mossy_bark.jpg", 640, 480),
    ("mossy_log.jpg", 960, 638), ("mudstone.jpg", 960, 638), ("ocean_splash.jpg", 960, 638),
    ("ocean_waves.jpg", 960, 638), ("redwoods_above.jpg", 960, 638), ("rocks.jpg", 1296, 864),
    ("sheep.jpg", 1138, 665), ("spiders_web.jpg", 960, 638), ("sun_behind_clouds.jpg", 1296, 864),
    ("sun_behind_leaves.jpg", 960, 638), ("trees_above.jpg", 604, 453),
    ("trees_at_dusk.jpg", 604, 453), ("wool_mill_machine.jpg", 720, 480),
]
KPA_DIR = "usr/share/kphotoalbum/demo/"
KPA_FILES = [  # stored size; index.xml's angle turns 4 of them upright
    ("anne_helene.jpg", 400, 600), ("bar55.jpg", 800, 600), ("bar55_2.jpg", 800, 600),
    ("blackie.jpg", 800, 549), ("cold_water.jpg", 800, 533), ("donna.jpg", 800, 532),
    ("donna_2.jpg", 800, 600), ("grand_canyon_1.jpg", 800, 535), ("grand_canyon_2.jpg", 800, 600),
    ("grand_canyon_3.jpg", 800, 600), ("jesper.jpg", 800, 533), ("jesper_2.jpg", 800, 532),
    ("new_wave_1.jpg", 800, 549), ("new_wave_2.jpg", 800, 549), ("pool.jpg", 800, 600),
    ("pool_2.jpg", 800, 600), ("qt-logo.jpg", 800, 542), ("skagen.jpg", 800, 533),
    ("skagen_2.jpg", 800, 600), ("snow.jpg", 800, 600), ("spiff.jpg", 800, 551),
    ("spiff_2.jpg", 800, 550), ("sunset.jpg", 800, 532), ("wayne.jpg", 800, 600),
]
KPA_ANGLES = {"new_wave_1.jpg": 90, "grand_canyon_1.jpg": 180, "wayne.jpg": 90, "pool_2.jpg": 270}
SKI_DIR = "usr/lib/python3/dist-packages/skimage/data/"
SKI_FILES = [  # licence from skimage/data/_fetchers.py
    ("astronaut.png", 512, 512, "Public domain (NASA)"),
    ("chelsea.png", 451, 300, "CC0 (Stefan van der Walt)"),
    ("coffee.png", 600, 400, "CC0 (Rachel Michetti)"),
    ("rocket.jpg", 640, 427, "Public domain (SpaceX)"),
]


def doc(pkg):
    return f"usr/share/doc/{pkg}/copyright"


def lic_file(pkg):
    return (pkg, doc(pkg), f"LICENSE.{pkg}.copyright")


# Each source: photos = list of dicts(package, member, w, h, licence, kind);
# notices = (package, member, destination name) copied next to the photos.
SOURCES = {
    "enlightenment": dict(
        photos=[dict(package="enlightenment-data", member=E_DIR + n, w=w, h=h, kind="edj",
                     licence="BSD-2-clause (Carsten Haitzler and contributors)") for n, w, h in E_FILES],
        notices=[lic_file("enlightenment-data")]),
    "lomiri": dict(
        photos=[dict(package=p, member=L16 + n, w=w, h=h, licence=l) for p, n, w, h, l in LOMIRI_FILES],
        notices=[lic_file("lomiri-wallpapers-16.04"), lic_file("lomiri-wallpapers-20.04")]),
    "lxqt": dict(
        photos=[dict(package="lxqt-themes", member=LXQT_DIR + n, w=w, h=h,
                     licence="CC-BY-SA-3.0 (LXQt wallpapers/License; Debian copyright: LGPL-2.1+)")
                for n, w, h in LXQT_FILES],
        notices=[lic_file("lxqt-themes"), ("lxqt-themes", LXQT_DIR + "License", "LICENSE.lxqt-wallpapers.txt")]),
    "efl-elementary": dict(
        photos=[dict(package="libelementary-data", member=ELM_DIR + n, w=w, h=h,
                     licence="BSD-2-clause (EFL, Debian copyright)") for n, w, h in ELM_FILES],
        notices=[lic_file("libelementary-data")]),
    "digikam": dict(
        photos=[dict(package="digikam-data", member="usr/share/digikam/about/images/body-background.jpg",
                     w=4032, h=3024, licence="GPL-2+ (digiKam, Debian copyright)")],
        notices=[lic_file("digikam-data")]),
    "sddm-maldives": dict(
        photos=[dict(package="sddm-theme-maldives", member="usr/share/sddm/themes/maldives/background.jpg",
                     w=2592, h=1754, licence="CC-BY-3.0 (Nevit Dilmen)")],
        notices=[lic_file("sddm-theme-maldives")]),
    "palapeli": dict(
        photos=[dict(package="palapeli-data", member=PAL_DIR + n, w=w, h=h, licence=l) for n, w, h, l in PAL_FILES],
        notices=[lic_file("palapeli-data")] + [
            ("palapeli-data", PAL_DIR + n.replace(".jpg", ".desktop"), "LICENSE.credits." + n.replace(".jpg", ".desktop"))
            for n, _, _, _ in PAL_FILES]),
    "tuxpaint": dict(
        photos=[dict(package="tuxpaint-data", member=TUX_DIR + n, w=w, h=h,
                     licence="GPL-2+ (Bill Kendrick, Tux Paint)") for n, w, h in TUX_FILES],
        notices=[lic_file("tuxpaint-data"),
                 ("tuxpaint-data", "usr/share/doc/tuxpaint-data/AUTHORS.txt.gz", "LICENSE.tuxpaint-AUTHORS.txt")]),
    "kphotoalbum": dict(
        photos=[dict(package="kphotoalbum", member=KPA_DIR + n, w=w, h=h,
                     licence="GPL-2+ (KPhotoAlbum demo, Debian copyright)") for n, w, h in KPA_FILES],
        notices=[lic_file("kphotoalbum")]),
    "skimage": dict(
        photos=[dict(package="python3-skimage", member=SKI_DIR + n, w=w, h=h, licence=l) for n, w, h, l in SKI_FILES],
        notices=[lic_file("python3-skimage"),
                 ("python3-skimage", SKI_DIR + "_fetchers.py", "LICENSE.skimage-data-credits.txt")]),
}
EXTRA_MEMBERS = {"kphotoalbum": [KPA_DIR + "index.xml"]}

# ------------------------------------------------------------------ readers
def eet_largest_jpeg(blob, name):
    """Largest JPEG image stored in an Edje (.edj, Eet v2) file."""
    magic, ndir, _ndict = struct.unpack(">III", blob[:12])
    if magic != 0x1EE70F42:
        sys.exit(f"{name}: not an Eet v2 file")
    best = None
    for i in range(ndir):
        off, size, _dsize, noff, nsize, flags = struct.unpack(">6I", blob[12 + 24 * i: 36 + 24 * i])
        ename = blob[noff:noff + nsize].rstrip(b"\0").decode()
        data = blob[off:off + size]
        if not ename.startswith("edje/images/") or flags & 0x7 or data[:3] != b"\xff\xd8\xff":
            continue
        w, h = Image.open(io.BytesIO(data)).size
        if best is None or w * h > best[0]:
            best = (w * h, ename, data)
    if best is None:
        sys.exit(f"{name}: no JPEG image inside")
    return best[1], best[2]


def read_deb(pkg, wanted):
    """{member: bytes} for the wanted regular files of a .deb (streamed, nothing unpacked)."""
    _ver, path = DEBS[pkg]
    wanted = set(wanted)
    got = {}
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", path], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
        for m in tf:
            name = m.name[2:] if m.name.startswith("./") else m.name
            if name in wanted and m.isfile():
                data = tf.extractfile(m).read()
                if name.endswith(".edj"):  # keep only the photo, not 50 MB of Edje
                    inner, data = eet_largest_jpeg(data, name)
                    name_out = (name, inner)
                else:
                    name_out = (name, None)
                got[name] = (name_out, data)
    proc.stdout.close()
    if proc.wait() != 0:
        sys.exit(f"dpkg-deb --fsys-tarfile {path} failed")
    missing = sorted(wanted - set(got))
    if missing:
        sys.exit(f"{pkg} {DEBS[pkg][0]}: expected files missing: {', '.join(missing)}")
    return got


# ------------------------------------------------------------------ synthesis
# EXIF Orientation o: the stored pixels are the upright photo turned so that a
# viewer applying o shows it upright again (what a phone writes).
STORE_FOR_ORIENTATION = {
    1: None,
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,   # upright turned 90 deg counter-clockwise
    8: Image.Transpose.ROTATE_270,  # upright turned 90 deg clockwise
}


def self_test():
    im = Image.new("RGB", (3, 2))
    im.putdata([(i * 40, 0, 0) for i in range(6)])
    for o, t in STORE_FOR_ORIENTATION.items():
        stored = im if t is None else im.transpose(t)
        buf = io.BytesIO()
        ex = Image.Exif()
        ex[0x0112] = o
        stored.save(buf, "PNG", exif=ex.tobytes())
        back = ImageOps.exif_transpose(Image.open(buf))
        assert back.size == im.size and list(back.getdata()) == list(im.getdata()), o


def fit(size, max_side):
    w, h = size
    s = max_side / max(w, h)
    return (max(1, round(w * s)), max(1, round(h * s)))


def make_uploads(task):
    """Decode one original, write its upload variant(s); return manifest rows."""
    (source, stem, package, version, licence, original, data, angle, tmpdir) = task
    im = Image.open(io.BytesIO(data))
    icc = im.info.get("icc_profile")
    im = ImageOps.exif_transpose(im)            # upright (no-op for these originals)
    if angle:                                   # KPhotoAlbum: clockwise display angle
        im = im.rotate(-angle, expand=True)
    if im.mode in ("RGBA", "LA", "P"):
        rgba = im.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] != 255:
            raise SystemExit(f"{original}: has transparency, not a photo")
        im = rgba
    im = im.convert("RGB")
    W, H = im.size
    variants = []
    if W * H > MAX_NATIVE_PIXELS:
        variants.append(("", fit((W, H), PHONE_MAX_SIDE)))
    else:
        variants.append(("", (W, H)))
    native_side = max(variants[0][1])
    if max(W, H) >= SECOND_VARIANT_MIN_SIDE:
        rng = random.Random(f"{SEED}/{source}/{stem}/side")
        sides = [s for s in SECOND_VARIANT_SIDES if s <= 0.85 * native_side]
        if sides:
            side = rng.choice(sides)
            variants.append((f"_{side}", fit((W, H), side)))
    rows = []
    for suffix, size in variants:
        assert size[0] <= W and size[1] <= H, "never upscale"
        rng = random.Random(f"{SEED}/{source}/{stem}{suffix}")
        quality = rng.randint(85, 98)
        subsampling = "4:2:0" if rng.random() < 0.6 else "4:4:4"
        optimize = rng.random() < 0.5
        r = rng.random()
        if r < 0.25:
            orientation = rng.choice((6, 6, 8, 3))
        elif r < 0.85:
            orientation = 1
        else:
            orientation = 0                     # no EXIF at all (stripped upload)
        img = im if size == (W, H) else im.resize(size, Image.Resampling.LANCZOS)
        t = STORE_FOR_ORIENTATION.get(orientation)
        stored = img if t is None else img.transpose(t)
        kw = dict(quality=quality, subsampling=subsampling, optimize=optimize)
        if icc:
            kw["icc_profile"] = icc
        if orientation:
            ex = Image.Exif()
            ex[0x0112] = orientation
            kw["exif"] = ex.tobytes()
        buf = io.BytesIO()
        stored.save(buf, "JPEG", **kw)
        blob = buf.getvalue()
        # check what a client will see
        chk = Image.open(io.BytesIO(blob))
        assert chk.size == stored.size
        assert (chk.getexif().get(0x0112) or 0) == orientation
        assert ImageOps.exif_transpose(chk).size == img.size
        rel = f"{source}/{stem}{suffix}.jpg"
        with open(os.path.join(tmpdir, rel), "wb") as f:
            f.write(blob)
        rows.append(dict(file=rel, source=source, package=package, package_version=version,
                         licence=licence, original_file=original, width=stored.size[0],
                         height=stored.size[1], jpeg_quality=quality, subsampling=subsampling,
                         exif_orientation=orientation, bytes=len(blob),
                         _sha=hashlib.sha256(blob).hexdigest()))
    return rows


def main():
    self_test()
    tasks = []
    notices = {}       # source -> {dest name: bytes}
    counts = {}
    for source, spec in SOURCES.items():
        by_pkg = {}
        for ph in spec["photos"]:
            by_pkg.setdefault(ph["package"], []).append(ph["member"])
        for pkg, member, _dest in spec["notices"]:
            by_pkg.setdefault(pkg, []).append(member)
        for member in EXTRA_MEMBERS.get(source, []):
            by_pkg.setdefault(spec["photos"][0]["package"], []).append(member)
        content = {}
        for pkg, members in by_pkg.items():
            log(f"{source}: reading {pkg} {DEBS[pkg][0]} ...")
            content[pkg] = read_deb(pkg, members)
        if source == "kphotoalbum":  # the angles must be the ones the demo album gives
            (_n, _i), xml = content["kphotoalbum"][KPA_DIR + "index.xml"]
            angles = {e.get("file"): int(e.get("angle", "0")) for e in ET.fromstring(xml).iter("image")}
            got = {k: v for k, v in angles.items() if v}
            if got != KPA_ANGLES:
                sys.exit(f"kphotoalbum: index.xml angles {got} differ from the expected {KPA_ANGLES}")
        for ph in spec["photos"]:
            (member, inner), data = content[ph["package"]][ph["member"]]
            w, h = Image.open(io.BytesIO(data)).size
            if (w, h) != (ph["w"], ph["h"]):
                sys.exit(f"{ph['package']}: {member} is {w}x{h}, expected {ph['w']}x{ph['h']}")
            stem = os.path.splitext(os.path.basename(member))[0]
            original = member + (f"#{inner}" if inner else "")
            angle = KPA_ANGLES.get(os.path.basename(member), 0) if source == "kphotoalbum" else 0
            tasks.append((source, stem, ph["package"], DEBS[ph["package"]][0], ph["licence"], original, data, angle))
        notices[source] = {}
        for pkg, member, dest in spec["notices"]:
            (_m, _i), data = content[pkg][member]
            if member.endswith(".gz"):
                data = gzip.decompress(data)
            if member.endswith("_fetchers.py"):  # keep only the four photos' credits
                src = data.decode()
                parts = []
                for fn in ("astronaut", "chelsea", "coffee", "rocket"):
                    m = re.search(r'def %s\(\):\n(\s+""".*?""")' % fn, src, re.S)
                    if not m:
                        sys.exit(f"skimage: no docstring for {fn}() in _fetchers.py")
                    parts.append(f"skimage.data.{fn}() -- from skimage/data/_fetchers.py:\n{m.group(1)}\n")
                data = "\n".join(parts).encode()
            notices[source][dest] = data
        counts[source] = len(spec["photos"])

    # ai-benchmark (PyPI wheel, also used by scripts/fetch_photos.sh)
    with zipfile.ZipFile(AIB_WHEEL) as zf:
        lic = zf.read("ai_benchmark-0.1.2.dist-info/LICENSE.md")
        for source, prefix, want in (("aib-street", "ai_benchmark/data/enhancement/", 100),
                                     ("aib-indoor", "ai_benchmark/data/segmentation/", 30)):
            names = sorted(n for n in zf.namelist() if n.startswith(prefix) and "/" not in n[len(prefix):]
                           and n.endswith(".jpg") and not n.endswith("_segmented.jpg"))
            if len(names) != want:
                sys.exit(f"{source}: expected {want} photos under {prefix}, the wheel has {len(names)}")
            for n in names:
                data = zf.read(n)
                if source == "aib-street" and Image.open(io.BytesIO(data)).size != (1024, 682):
                    sys.exit(f"{n}: expected 1024x682")
                stem = os.path.splitext(os.path.basename(n))[0]
                tasks.append((source, stem, "ai-benchmark", "0.1.2",
                              "Apache-2.0 (Andrey Ignatov, AI Benchmark)", n, data, 0))
            notices[source] = {"LICENSE.md": lic}
            counts[source] = want

    parent = os.path.dirname(OUT)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-uploads-", dir=parent)
    try:
        for source, files in notices.items():
            os.makedirs(os.path.join(tmp, source), exist_ok=True)
            for dest, data in files.items():
                with open(os.path.join(tmp, source, dest), "wb") as f:
                    f.write(data)
        log(f"encoding {len(tasks)} photos from {len(counts)} sources ...")
        jobs = [t + (tmp,) for t in tasks]
        ctx = multiprocessing.get_context("fork")
        rows = []
        with ctx.Pool(os.cpu_count() or 1) as pool:
            for i, r in enumerate(pool.imap(make_uploads, jobs, chunksize=1), 1):
                rows.extend(r)
                if i % 50 == 0 or i == len(jobs):
                    log(f"  {i}/{len(jobs)} photos encoded")
        rows.sort(key=lambda r: r["file"])
        cols = ["file", "source", "package", "package_version", "licence", "original_file", "width",
                "height", "jpeg_quality", "subsampling", "exif_orientation", "bytes"]
        with open(os.path.join(tmp, "MANIFEST.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        with open(os.path.join(tmp, "SHA256SUMS"), "w") as f:
            for r in rows:
                f.write(f"{r['_sha']}  {r['file']}\n")
        # count check per source before the result replaces anything
        for source, want in counts.items():
            photos = {r["original_file"] for r in rows if r["source"] == source}
            if len(photos) != want:
                sys.exit(f"{source}: {len(photos)} photos written, expected {want}")
        with open(os.path.join(tmp, ".recipe"), "w") as f:
            f.write(f"{RECIPE} pillow-{PILLOW_VERSION}\n")
        os.chmod(tmp, 0o755)
        if os.path.isdir(OUT):
            old = OUT + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(OUT, old)
            os.rename(tmp, OUT)
            shutil.rmtree(old)
        else:
            os.rename(tmp, OUT)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    for source in counts:
        rs = [r for r in rows if r["source"] == source]
        sides = [max(r["width"], r["height"]) for r in rs]
        mb = sum(r["bytes"] for r in rs) / 1e6
        log(f"  {source:15s} {counts[source]:4d} photos -> {len(rs):4d} files, "
            f"max side {min(sides)}-{max(sides)} px, {mb:.1f} MB")
    total_mb = sum(r["bytes"] for r in rows) / 1e6
    log(f"{sum(counts.values())} photos -> {len(rows)} files ({total_mb:.0f} MB) in data/uploads/")


if __name__ == "__main__":
    main()
PY

log "done in $(( $(date +%s) - START )) s"
