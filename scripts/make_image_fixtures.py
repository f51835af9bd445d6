#!/usr/bin/env python3
"""Parity fixtures for image preprocessing (src/vision): images, and what the HF image processors make of them.

Run where transformers, torch, torchvision and PIL are installed (the GPU machine: transformers 5.17,
torch 2.11, Python 3.12); it needs no network and no GPU:
    python3 scripts/make_image_fixtures.py --out tests/fixtures/images

It writes <out>/:
  images/<name>.<png|jpg>   small test images made here with PIL (photo-like gradients plus noise, so
                            resampling matters): RGB, L, LA, RGBA, P (with tRNS), 16-bit grayscale
                            (I;16), 16-bit RGB (PNG written by hand: PIL cannot save it), baseline JPEG,
                            grayscale JPEG, a JPEG with EXIF orientation 6; sizes 97x61, 61x97, 1x1,
                            4000x20, 20x400, 201x1 (Qwen refuses its aspect ratio), ...
  decoded.safetensors       <name>: uint8 [H, W, 3], Image.open(file).convert("RGB") (what every
                            processor starts from; absent when PIL cannot convert the file)
  configs/<cfg>/preprocessor_config.json   from configs/preprocessor/<cfg>.json of this repository:
                            the published llava-hf/llava-1.5-7b-hf, llava-hf/llama3-llava-next-8b-hf,
                            Qwen/Qwen2.5-VL-7B-Instruct configs and tiny variants
  expected/<cfg>__<Class>.safetensors      per case key K: K.pixel_values float32 (full), or for the
                            real-size configs K.pixel_values.sampled = pixel_values.flatten()[::stride]
                            float32 (sum and abs sum in meta.json); K.image_grid_thw / K.image_sizes
                            int64 when the processor returns them
  meta.json                 versions; every image; per config the family, the class
                            AutoImageProcessor.from_pretrained(dir) picks (and its backend), and per
                            processor class present in this transformers (slow/Pil and fast/torchvision,
                            whatever the names are in this version) its backend and cases (the images
                            of each call, in order; storage full/sampled; the error message when the
                            processor raised).
Every processor call gets PIL images opened from the files (Image.open), as a user would pass them.
"""
import argparse
import hashlib
import json
import math
import os
import platform
import random
import shutil
import struct
import sys
import zlib

import PIL
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_STRIDE = 97


# ---- images ------------------------------------------------------------------------------------

def photo(w, h, seed, noise=24):
    """Smooth color gradients and waves plus uniform noise: resampling errors show in every pixel."""
    rng = random.Random(seed)
    fx, fy, ph = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3), rng.uniform(0, 6.28)
    data = bytearray()
    for y in range(h):
        for x in range(w):
            base = (
                120 + 80 * math.sin(fx * x + ph) * math.cos(fy * y),
                60 + 150 * (x / max(1, w - 1)),
                200 - 150 * (y / max(1, h - 1)),
            )
            for c in range(3):
                v = int(base[c] + rng.uniform(-noise, noise))
                data.append(0 if v < 0 else 255 if v > 255 else v)
    return Image.frombytes("RGB", (w, h), bytes(data))


def alpha_ramp(w, h):
    return Image.frombytes("L", (w, h), bytes(((x * 7 + y * 13) % 256) for y in range(h) for x in range(w)))


def png_rgb16(path, w, h, seed):
    """A 16-bit RGB PNG, encoded by hand (PIL has no 16-bit RGB mode to save)."""
    rng = random.Random(seed)
    raw = bytearray()
    for y in range(h):
        raw.append(0)  # filter: none
        for x in range(w):
            for c in range(3):
                v = int((x * 1700 + y * 900 + c * 20000) % 65536) ^ rng.randrange(0, 4096)
                raw += struct.pack(">H", v)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) +
                chunk(b"IEND", b""))


def make_images(img_dir):
    """Returns [(name, file)]; writes the files."""
    os.makedirs(img_dir, exist_ok=True)
    out = []

    def save(name, im, ext, **kw):
        fname = f"{name}.{ext}"
        im.save(os.path.join(img_dir, fname), **kw)
        out.append((name, fname))

    save("rgb_97x61", photo(97, 61, 1), "png")
    save("rgb_61x97", photo(61, 97, 2), "jpg", quality=90)
    save("rgb_1x1", photo(1, 1, 3), "png")
    save("rgb_4000x20", photo(4000, 20, 4, noise=3), "png")  # aspect ratio exactly 200: Qwen allows it
    save("rgb_20x400", photo(20, 400, 5), "png")
    save("rgb_201x1", photo(201, 1, 6), "png")  # aspect ratio 201: Qwen's smart_resize raises
    save("gray_L_50x40", photo(50, 40, 7).convert("L"), "png")
    la = Image.merge("LA", (photo(45, 33, 8).convert("L"), alpha_ramp(45, 33)))
    save("gray_LA_45x33", la, "png")
    rgba = photo(33, 45, 9)
    rgba.putalpha(alpha_ramp(33, 45))
    save("rgba_33x45", rgba, "png")
    pal = photo(40, 30, 10).quantize(colors=48)
    save("palette_P_40x30", pal, "png", transparency=0)
    g16 = Image.frombytes("I;16", (30, 20), b"".join(
        struct.pack("<H", (x * 997 + y * 131) % 65536 if (x + y) % 3 else (x * 7 + y) % 256)
        for y in range(20) for x in range(30)))
    save("gray16_30x20", g16, "png")
    fname = "rgb16_25x35.png"
    png_rgb16(os.path.join(img_dir, fname), 25, 35, 11)
    out.append(("rgb16_25x35", fname))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display; processors ignore it
    save("exif6_40x24", photo(40, 24, 12), "jpg", quality=92, exif=exif)
    save("gray_L_37x29", photo(37, 29, 13).convert("L"), "jpg", quality=85)
    return out


# ---- processors --------------------------------------------------------------------------------

FAMILIES = {
    "clip": "CLIPImageProcessor",
    "llava_next": "LlavaNextImageProcessor",
    "qwen2_vl": "Qwen2VLImageProcessor",
}

ALL = ["rgb_97x61", "rgb_61x97", "rgb_1x1", "rgb_4000x20", "rgb_20x400", "rgb_201x1", "gray_L_50x40",
       "gray_LA_45x33", "rgba_33x45", "palette_P_40x30", "gray16_30x20", "rgb16_25x35", "exif6_40x24",
       "gray_L_37x29"]
# (config file stem, family, storage, cases: lists of image names per call)
CONFIGS = [
    ("tiny-clip", "clip", "full",
     [[n] for n in ALL] + [["rgb_97x61", "rgb_61x97", "gray_L_50x40"]]),
    ("tiny-clip-bigcrop", "clip", "full",
     [["rgb_97x61"], ["rgb_61x97"], ["rgb_1x1"], ["rgb_20x400"]]),
    ("tiny-llava-next", "llava_next", "full",
     [[n] for n in ["rgb_97x61", "rgb_61x97", "rgb_1x1", "rgb_4000x20", "rgb_20x400", "gray_LA_45x33",
                    "palette_P_40x30", "gray16_30x20"]] + [["rgb_97x61", "rgb_4000x20", "rgb_1x1"]]),
    ("tiny-qwen2-vl", "qwen2_vl", "full",
     [[n] for n in ALL] + [["rgb_97x61", "rgb_61x97", "rgba_33x45"]]),
    ("small-qwen2-vl-p14", "qwen2_vl", "full", [["rgb_97x61"]]),
    ("llava-1.5-7b-hf", "clip", "sampled", [["rgb_97x61"], ["rgb_61x97"]]),
    ("llama3-llava-next-8b-hf", "llava_next", "sampled", [["rgb_97x61"], ["rgb_20x400"]]),
    ("qwen2.5-vl-7b-instruct", "qwen2_vl", "sampled", [["rgb_97x61"], ["rgb_4000x20"], ["rgb_201x1"]]),
]


def backend_of(proc):
    b = getattr(proc, "backend", None)
    if isinstance(b, str):
        return "pil" if b == "pil" else "torchvision"
    if type(proc).__name__.endswith("Fast"):
        return "torchvision"
    try:
        from transformers.image_processing_utils_fast import BaseImageProcessorFast
        if isinstance(proc, BaseImageProcessorFast):
            return "torchvision"
    except Exception:
        pass
    return "pil"


def processor_classes(base):
    """Distinct classes named base, base+'Fast', base+'Pil' in this transformers: [(name, cls)]."""
    seen, out = {}, []
    for name in (base, base + "Fast", base + "Pil"):
        try:
            cls = getattr(transformers, name)
        except Exception:
            continue
        if cls is None or not isinstance(cls, type):
            continue
        if cls in seen:
            seen[cls].append(name)
            continue
        seen[cls] = [name]
        out.append((name, cls))
    return out, {c.__name__: names for c, names in seen.items()}


def to_tensor(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().contiguous().clone()
    return torch.as_tensor(x).contiguous().clone()


def run_config(out, stem, family, storage, cases, pil_images):
    cfg_dir = os.path.join(out, "configs", stem)
    os.makedirs(cfg_dir, exist_ok=True)
    shutil.copyfile(os.path.join(REPO, "configs", "preprocessor", stem + ".json"),
                    os.path.join(cfg_dir, "preprocessor_config.json"))
    entry = {"name": stem, "family": family, "dir": f"configs/{stem}", "storage": storage, "classes": []}
    try:
        auto = transformers.AutoImageProcessor.from_pretrained(cfg_dir)
        entry["auto_class"], entry["auto_backend"] = type(auto).__name__, backend_of(auto)
    except Exception as e:  # recorded, not fatal
        entry["auto_class"], entry["auto_error"] = None, f"{type(e).__name__}: {e}"
    classes, aliases = processor_classes(FAMILIES[family])
    entry["class_aliases"] = aliases
    for name, cls in classes:
        proc = cls.from_pretrained(cfg_dir)
        backend = backend_of(proc)
        tensors, run = {}, {"class": name, "backend": backend,
                            "file": f"expected/{stem}__{name}.safetensors", "cases": []}
        for i, names in enumerate(cases):
            key = f"c{i:02d}"
            case = {"key": key, "images": names, "error": None}
            try:
                feats = proc(images=[pil_images[n]() for n in names], return_tensors="pt")
            except Exception as e:
                case["error"] = f"{type(e).__name__}: {e}"
                run["cases"].append(case)
                continue
            pv = to_tensor(feats["pixel_values"])
            case["pixel_values_dtype"] = str(pv.dtype)
            pv = pv.float()
            case["shape"] = list(pv.shape)
            if storage == "full":
                tensors[f"{key}.pixel_values"] = pv
            else:
                flat = pv.reshape(-1).double()
                tensors[f"{key}.pixel_values.sampled"] = flat[::SAMPLE_STRIDE].float().contiguous()
                case.update(stride=SAMPLE_STRIDE, sum=flat.sum().item(), abs_sum=flat.abs().sum().item(),
                            sha256=hashlib.sha256(pv.numpy().tobytes()).hexdigest())
            for extra in ("image_grid_thw", "image_sizes"):
                if extra in feats:
                    tensors[f"{key}.{extra}"] = to_tensor(feats[extra]).to(torch.int64)
            run["cases"].append(case)
        os.makedirs(os.path.join(out, "expected"), exist_ok=True)
        save_file(tensors, os.path.join(out, run["file"]))
        entry["classes"].append(run)
    return entry


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = args.out
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    img_dir = os.path.join(out, "images")
    files = make_images(img_dir)

    meta = {
        "versions": {
            "python": platform.python_version(), "transformers": transformers.__version__,
            "torch": torch.__version__, "pillow": PIL.__version__,
            "torch_cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")(),
        },
        "sample_stride": SAMPLE_STRIDE, "images": [], "configs": [],
    }
    try:
        import torchvision
        meta["versions"]["torchvision"] = torchvision.__version__
    except Exception:
        meta["versions"]["torchvision"] = None

    decoded, pil_images = {}, {}
    for name, fname in files:
        path = os.path.join(img_dir, fname)
        im = Image.open(path)
        rec = {"name": name, "file": f"images/{fname}", "format": im.format, "mode": im.mode,
               "width": im.width, "height": im.height, "pil_error": None}
        try:
            rgb = im.convert("RGB")
            decoded[name] = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).reshape(
                rgb.height, rgb.width, 3).clone()
        except Exception as e:
            rec["pil_error"] = f"{type(e).__name__}: {e}"
        meta["images"].append(rec)
        pil_images[name] = (lambda p=path: Image.open(p))
    save_file(decoded, os.path.join(out, "decoded.safetensors"))

    for stem, family, storage, cases in CONFIGS:
        print(f"[make_image_fixtures] {stem}", file=sys.stderr)
        meta["configs"].append(run_config(out, stem, family, storage, cases, pil_images))

    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    total = 0
    for root, _, names in os.walk(out):
        total += sum(os.path.getsize(os.path.join(root, n)) for n in names)
    print(f"[make_image_fixtures] wrote {out}: {total / 1e6:.2f} MB; transformers {transformers.__version__}",
          file=sys.stderr)
    for c in meta["configs"]:
        print(f"  {c['name']}: auto={c.get('auto_class')} ({c.get('auto_backend')}); classes: " +
              ", ".join(f"{r['class']}={r['backend']}" for r in c["classes"]), file=sys.stderr)
    if total > 4e6:
        print("[make_image_fixtures] WARNING: over the 4 MB budget", file=sys.stderr)


if __name__ == "__main__":
    main()
