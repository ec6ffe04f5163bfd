"""Fixtures for ditbench-data's ADM centre crop, made once with PIL and numpy.

Writes crates/data/tests/fixtures/adm/ (committed; the Rust tests need no Python):

  folder/<class>/<image>            input images, laid out as an ImageFolder
  manifest.tsv                      the listing (class and sample lines, below)
  pillow<MAJOR>/<name>.png          PIL's outputs (lossless PNG, RGB 8-bit)
  pillow<MAJOR>/<name>.f32          raw little-endian float32 CHW of the full DiT transform
  pillow<MAJOR>/manifest.tsv        the cases computed with that Pillow (below)

Pillow changed the order of its two resize passes after 11.0 (newer versions run the
vertical pass first when the height shrinks much more than the width), which moves
some pixels by a level or two, so the expected outputs are made with two Pillows: the
one in .venv (13.x) and 9.5.0, like the Pillow of the official DiT runs.

Manifest lines (tab-separated):

  sample   <index> <relative path> <label>              torchvision ImageFolder order
  class    <label> <name>                               sorted class folders
  crop     <input> <size> <expected.png>                center_crop_arr(convert("RGB"), size)
  resize   <input> <box|bicubic> <w> <h> <expected.png> convert("RGB").resize((w, h), filter)
  decode   <input> <expected.png>                       PIL's decode, convert("RGB")
  tensor   <input> <size> <flip 0|1> <expected.f32>     DiT train.py transform, as float32

`center_crop_arr` below is the official guided-diffusion / DiT function, verbatim in
logic. The listing follows torchvision.datasets.ImageFolder (find_classes +
make_dataset: sorted class folders, sorted(os.walk(followlinks=True)), sorted file
names), written out here because torchvision is not installed in the venv.

Run from the repository root (needs pillow: `.venv/bin/pip install pillow`):

    .venv/bin/python scripts/reference/make_data_fixtures.py
    .venv/bin/pip install --target /tmp/pillow9 pillow==9.5.0
    PYTHONPATH=/tmp/pillow9 .venv/bin/python scripts/reference/make_data_fixtures.py --expected-only

The first run rewrites the inputs, the listing and the expected outputs of the running
Pillow; `--expected-only` writes only the expected outputs of the running Pillow, from
the inputs already there.

The inputs come from a fixed numpy seed, so reruns are byte-identical for a given
Pillow/zlib/libjpeg build.
"""

import os
import shutil
import sys

import numpy as np
import PIL
from PIL import Image

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "data", "tests", "fixtures", "adm")
ROOT = os.path.normpath(ROOT)
EXTENSIONS = (".png", ".jpg", ".jpeg")
TENSOR_INPUTS = ("photos/photo_301x211.png", "modes/rgba_90x120.png", "small/small_40x25.png", "jpeg/photo_q90.jpg")


def center_crop_arr(pil_image, image_size):
    """guided-diffusion image_datasets.py / DiT train.py."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y: crop_y + image_size, crop_x: crop_x + image_size]


def dit_transform(pil_image, size, flip):
    """train.py: center_crop_arr, RandomHorizontalFlip (here forced), ToTensor,
    Normalize([0.5]*3, [0.5]*3), in float32 like torch."""
    arr = center_crop_arr(pil_image, size)
    if flip:
        arr = arr[:, ::-1]
    x = arr.astype(np.float32) / np.float32(255.0)  # ToTensor
    x = (x - np.float32(0.5)) / np.float32(0.5)  # Normalize
    return np.ascontiguousarray(x.transpose(2, 0, 1)).astype("<f4")


def synthetic(rng, w, h):
    """A photo-like test image: smooth colour fields, hard-edged shapes, fine detail
    and mild noise, so every resampling tap matters."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.28)
        img[..., c] = 0.5 + 0.35 * np.sin(fx * 6.28 * xx / w + ph) * np.cos(fy * 6.28 * yy / h)
    for _ in range(6):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(2, max(3, w // 3)), y0 + rng.integers(2, max(3, h // 3))
        img[y0:y1, x0:x1] = rng.uniform(0, 1, 3)
    # a fine checker in one corner (aliasing stress) and thin lines
    cw, ch = max(2, w // 5), max(2, h // 5)
    img[:ch, :cw] = ((xx[:ch, :cw].astype(int) + yy[:ch, :cw].astype(int)) % 2)[..., None]
    img[h // 2, :] = [1.0, 0.0, 0.0]
    img[:, w // 3] = [0.0, 0.0, 1.0]
    img += rng.normal(0, 0.012, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def list_image_folder(root):
    """torchvision.datasets.folder.find_classes + make_dataset."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    samples = []
    for label, cls in enumerate(classes):
        target = os.path.join(root, cls)
        for dirpath, _, fnames in sorted(os.walk(target, followlinks=True)):
            for fname in sorted(fnames):
                if fname.lower().endswith(EXTENSIONS):
                    samples.append((os.path.join(dirpath, fname), label))
    return classes, samples


def write_inputs(folder):
    """The input images (and a non-image file); returns their relative paths."""
    if os.path.exists(folder):
        shutil.rmtree(folder)
    rng = np.random.default_rng(20240601)
    inputs = {}

    def save(rel, arr, mode=None, **kw):
        path = os.path.join(folder, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        im = Image.fromarray(arr) if mode is None else Image.fromarray(arr, mode)
        im.save(path, **kw)
        inputs[rel] = path
        return path

    # photos: box downsampling (odd sizes, several halvings), bicubic, crop offsets
    save("photos/photo_301x211.png", synthetic(rng, 301, 211))
    save("photos/large_400x300.png", synthetic(rng, 400, 300))
    save("photos/nested/tall_97x203.png", synthetic(rng, 97, 203))
    # small: upscaling, Python's round-half-to-even (54 * 36/48 = 40.5 -> 40), no-op resize
    save("small/small_40x25.png", synthetic(rng, 40, 25))
    save("small/tie_54x48.png", synthetic(rng, 54, 48))
    save("small/wide_517x130.png", synthetic(rng, 517, 130))
    # modes: grey, RGBA (alpha dropped by convert("RGB")), palette
    grey = synthetic(rng, 120, 90)[..., 1]
    save("modes/grey_120x90.png", grey, "L")
    rgba = np.concatenate([synthetic(rng, 90, 120), rng.integers(0, 256, (120, 90, 1), dtype=np.uint8)], axis=2)
    save("modes/rgba_90x120.png", rgba, "RGBA")
    pal = Image.fromarray(synthetic(rng, 100, 77)).quantize(colors=64, dither=Image.Dither.NONE)
    path = os.path.join(folder, "modes", "palette_100x77.png")
    pal.save(path)
    inputs["modes/palette_100x77.png"] = path
    # JPEG (4:2:0, quality 90): decoders may differ by a level or so
    save("jpeg/photo_q90.jpg", synthetic(rng, 256, 192), quality=90)
    # not images: ignored by the listing
    with open(os.path.join(folder, "photos", "notes.txt"), "w") as f:
        f.write("not an image\n")
    return inputs


def header():
    return (
        f"# made by scripts/reference/make_data_fixtures.py with Pillow {PIL.__version__}, "
        f"numpy {np.__version__}, Python {sys.version.split()[0]}\n"
    )


def main():
    expected_only = "--expected-only" in sys.argv[1:]
    folder = os.path.join(ROOT, "folder")
    if expected_only:
        _, samples = list_image_folder(folder)
        inputs = {os.path.relpath(p, folder): p for p, _ in samples}
    else:
        inputs = write_inputs(folder)
        lines = []
        classes, samples = list_image_folder(folder)
        for label, name in enumerate(classes):
            lines.append(f"class\t{label}\t{name}")
        for i, (path, label) in enumerate(samples):
            lines.append(f"sample\t{i}\t{os.path.relpath(path, folder)}\t{label}")
        with open(os.path.join(ROOT, "manifest.tsv"), "w") as f:
            f.write(header() + "\n".join(lines) + "\n")

    expected = os.path.join(ROOT, f"pillow{PIL.__version__.split('.')[0]}")
    if os.path.exists(expected):
        shutil.rmtree(expected)
    os.makedirs(expected)
    lines = []

    def stem(rel):
        return rel.replace("/", "__").rsplit(".", 1)[0]

    for rel, path in sorted(inputs.items()):
        im = Image.open(path).convert("RGB")
        sizes = [32] + ([64] if rel.startswith("photos/photo") or rel.startswith("small/small")
                        or rel.startswith("jpeg/") else [])
        if rel.startswith("small/tie"):
            sizes = [32, 36]
        if rel.startswith("small/wide"):
            sizes = [8, 16, 32]
        for size in sizes:
            out = f"{stem(rel)}.crop{size}.png"
            Image.fromarray(center_crop_arr(im, size)).save(os.path.join(expected, out))
            lines.append(f"crop\t{rel}\t{size}\t{out}")
        for flip in (0, 1) if rel in TENSOR_INPUTS else ():
            out = f"{stem(rel)}.t32.flip{flip}.f32"
            dit_transform(im, 32, flip).tofile(os.path.join(expected, out))
            lines.append(f"tensor\t{rel}\t32\t{flip}\t{out}")
        if rel.endswith(".jpg"):
            out = f"{stem(rel)}.decoded.png"
            im.save(os.path.join(expected, out))
            lines.append(f"decode\t{rel}\t{out}")

    # the resampler on its own: shrink, enlarge, mixed, box at non-integer factors
    cases = {
        "photos/photo_301x211.png": ((123, 77), (37, 200), (150, 105), (301, 50), (7, 5)),
        "small/small_40x25.png": ((97, 61), (41, 80), (40, 3)),
        # tall: newer Pillow runs the vertical pass first for some of these
        "photos/nested/tall_97x203.png": ((48, 101), (40, 48), (90, 154), (30, 200)),
    }
    for src, sizes in cases.items():
        im = Image.open(inputs[src]).convert("RGB")
        for filt, name in ((Image.BICUBIC, "bicubic"), (Image.BOX, "box")):
            for w, h in sizes:
                out = f"{stem(src)}.resize.{name}.{w}x{h}.png"
                im.resize((w, h), resample=filt).save(os.path.join(expected, out))
                lines.append(f"resize\t{src}\t{name}\t{w}\t{h}\t{out}")

    with open(os.path.join(expected, "manifest.tsv"), "w") as f:
        f.write(header() + "\n".join(lines) + "\n")
    total = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(ROOT) for n in ns)
    print(f"wrote {len(lines)} manifest lines, {total / 1024:.0f} KiB under {ROOT}")


if __name__ == "__main__":
    main()
