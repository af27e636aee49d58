"""Peak memory of decoding very large images (10,000 x 10,000 JPEG) with data.decode_images.

    python bench/experiments/large_image_memory.py            # 1, 4 and 16 copies, each in a fresh process

Prints the growth of the process's peak resident memory (ru_maxrss) during the decode, so a
change to the decode pipeline can be checked for how many full-size frames it holds at once.
A one-off: its figures (docs/reliability.md) were recorded at commit 62e8caf.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIDE = 10_000


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(image: Path, copies: int, image_size: int) -> None:
    from PIL import Image

    import data

    small = image.with_name(f"small{os.getpid()}.jpeg")
    Image.new("L", (64, 64)).save(small)
    data.decode_images([small], 8, 3)  # Pillow's decoder and the thread pool start up on a small image first
    before = peak_mib()
    started = time.perf_counter()
    images = data.decode_images([image] * copies, image_size, 3)
    seconds = time.perf_counter() - started
    print(
        f"{copies:3d} x {SIDE}x{SIDE} JPEG -> {images.shape}: {seconds:5.1f} s, "
        f"peak RSS {before:,.0f} -> {peak_mib():,.0f} MiB (+{peak_mib() - before:,.0f})",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 4, 16], help="copies decoded, one process each")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # image path, copies, image size
    args = parser.parse_args(argv)
    if args.child:
        measure(Path(args.child[0]), int(args.child[1]), int(args.child[2]))
        return
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "huge.jpeg"
        huge = Image.new("L", (SIDE, SIDE), 40)
        huge.paste(220, (SIDE // 2, 0, SIDE, SIDE))
        huge.save(path, quality=90)
        del huge
        print(f"{path.stat().st_size / 1e6:.1f} MB grayscale JPEG, decoded to RGB at 80 px; {os.cpu_count()} cores")
        for copies in args.copies:
            subprocess.run([sys.executable, __file__, "--child", str(path), str(copies), "80"], check=True)


if __name__ == "__main__":
    main()
