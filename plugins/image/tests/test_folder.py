"""image_folder: every format and mode, bad files skipped or refused, classes from subfolders."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from genloom_image.folder import ImageFolder
from genloom_image.pixels import Pixels
from PIL import Image

GRAY = 51  # 0.2 of full scale, in every file below
ENCODER = Pixels(resolution=8, channels=3)


def gray_images() -> dict[str, Image.Image]:
    """File name -> an image whose pixels all show GRAY, in many formats, modes and sizes."""
    palette = Image.new("P", (12, 9), 3)
    palette.putpalette([0, 0, 0] * 3 + [GRAY] * 3 + [0] * 756)
    see_through = palette.copy()
    see_through.info["transparency"] = 0  # index 0 unused: every pixel stays opaque
    return {
        "png/one.png": Image.new("1", (8, 8), 0),  # black: checked apart
        "png/l.png": Image.new("L", (20, 10), GRAY),
        "png/la.png": Image.new("LA", (10, 20), (GRAY, 255)),
        "png/p.png": palette,
        "png/p_transparency.png": see_through,
        "png/rgb.png": Image.new("RGB", (33, 17), (GRAY,) * 3),
        "png/rgba.png": Image.new("RGBA", (9, 9), (GRAY, GRAY, GRAY, 255)),
        "png/i16.png": Image.fromarray(np.full((8, 8), GRAY * 257, dtype=np.uint16)),
        "tiff/i.tif": Image.fromarray(np.full((8, 8), GRAY * 257, dtype=np.int32)),
        "tiff/f.tif": Image.fromarray(np.full((8, 8), 0.2, dtype=np.float32)),
        "jpeg/rgb.jpg": Image.new("RGB", (16, 16), (GRAY,) * 3),
        "jpeg/l.jpeg": Image.new("L", (16, 24), GRAY),
        "jpeg/cmyk.jpg": Image.new("RGB", (16, 16), (GRAY,) * 3).convert("CMYK"),
        "webp/rgb.webp": Image.new("RGB", (16, 16), (GRAY,) * 3),
        "webp/rgba.webp": Image.new("RGBA", (16, 16), (GRAY, GRAY, GRAY, 255)),
        "bmp/rgb.bmp": Image.new("RGB", (8, 12), (GRAY,) * 3),
        "bmp/p.bmp": palette,
        "gif/p.gif": palette,
        "flat.gif": see_through,
    }


def write(folder: Path, images: dict[str, Image.Image]) -> None:
    for name, image in images.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=100) if path.suffix in (".jpg", ".jpeg", ".webp") else image.save(path)


def test_every_format_and_mode_is_read_and_converted(tmp_path) -> None:
    images = gray_images()
    write(tmp_path, images)
    animated = tmp_path / "gif" / "animated.gif"  # its first frame is gray, the second white
    Image.new("L", (8, 8), GRAY).save(animated, save_all=True, append_images=[Image.new("L", (8, 8), 255)])
    dataset = ImageFolder(path=str(tmp_path), val_fraction=0.5)
    pixels = torch.cat([dataset.split(s, ENCODER).tensors["image"] for s in ("train", "val")])
    assert len(pixels) == len(images) + 1 and pixels.shape[1:] == (3, 8, 8)
    black = pixels.flatten(1).max(1).values < 1e-6
    assert black.sum() == 1  # the 1-bit PNG
    assert torch.allclose(pixels[~black], torch.full_like(pixels[~black], 0.2), atol=3 / 255)


def test_an_unreadable_file_is_skipped_and_counted_in_one_warning(tmp_path, caplog) -> None:
    write(tmp_path, {f"{i}.png": Image.new("L", (8, 8), 10 * i) for i in range(4)})
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "cut.png").write_bytes((tmp_path / "0.png").read_bytes()[:40])
    (tmp_path / ".hidden.png").write_bytes(b"ignored: hidden files are not data")
    with caplog.at_level(logging.WARNING, logger="genloom_image.folder"):
        dataset = ImageFolder(path=str(tmp_path), val_fraction=0.5)
        assert len(dataset.split("train", ENCODER)) + len(dataset.split("val", ENCODER)) == 4
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "skipped 2 of 6 files" in warning and "cut.png" in warning and "notes.txt" in warning


def test_strict_makes_an_unreadable_file_an_error_that_names_it(tmp_path) -> None:
    write(tmp_path, {"a.png": Image.new("L", (8, 8)), "b.png": Image.new("L", (8, 8))})
    (tmp_path / "cut.png").write_bytes((tmp_path / "a.png").read_bytes()[:40])
    with pytest.raises(ValueError, match=r"cut\.png is not a readable image.*dataset\.strict=false"):
        ImageFolder(path=str(tmp_path), strict=True, val_fraction=0.5).split("train", ENCODER)


def test_a_folder_without_images_is_an_error_that_says_so(tmp_path) -> None:
    with pytest.raises(ValueError, match="holds no images.*put images in it"):
        ImageFolder(path=str(tmp_path))
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no readable images: 1 file"):
        ImageFolder(path=str(tmp_path)).split("train", ENCODER)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(path=str(tmp_path / "missing"))


def test_subfolders_are_classes_in_sorted_order(tmp_path, caplog) -> None:
    shades = {"zebra": 200, "ant": 20, "moth": 120}
    write(tmp_path, {f"{c}/{i}.png": Image.new("L", (8, 8), v) for c, v in shades.items() for i in range(4)})
    write(tmp_path, {"moth/deeper/4.png": Image.new("L", (8, 8), 120), "stray.png": Image.new("L", (8, 8))})
    with caplog.at_level(logging.INFO, logger="genloom_image.folder"):
        dataset = ImageFolder(path=str(tmp_path), labels=True, val_fraction=0.25, condition="label")
        train, val = dataset.split("train", ENCODER), dataset.split("val", ENCODER)
    assert dataset.classes == ["ant", "moth", "zebra"]
    assert "0=ant (4), 1=moth (5), 2=zebra (4)" in caplog.text and "1 file(s) directly in" in caplog.text
    assert sorted(val.tensors["label"].tolist()) == [0, 1, 2]  # every 4th image of each class
    assert len(train) == 10
    for split in (train, val):
        shade = (split.tensors["image"][:, 0, 0, 0] * 255).round()
        assert shade.tolist() == [[20, 120, 200][label] for label in split.tensors["label"].tolist()]
        assert torch.equal(split.tensors["condition"], split.tensors["label"])


def test_the_split_depends_on_file_names_only(tmp_path) -> None:
    write(tmp_path, {f"{i:02d}.png": Image.new("L", (8, 8), i) for i in range(10)})
    first = ImageFolder(path=str(tmp_path)).split("val", ENCODER).tensors["image"]
    again = ImageFolder(path=str(tmp_path)).split("val", ENCODER).tensors["image"]
    assert torch.equal(first, again) and round(float(first[0, 0, 0, 0]) * 255) == 9  # the 10th file


def test_label_conditioning_needs_labels(tmp_path) -> None:
    write(tmp_path, {"a.png": Image.new("L", (8, 8))})
    with pytest.raises(ValueError, match="dataset.labels=true"):
        ImageFolder(path=str(tmp_path), condition="label")
    with pytest.raises(ValueError, match="no subfolders"):
        ImageFolder(path=str(tmp_path), labels=True)


def test_a_symlinked_class_folder_is_a_class_and_classes_are_logged_with_counts(tmp_path, caplog) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    write(data, {f"ant/{i}.png": Image.new("L", (8, 8), 20) for i in range(3)})
    write(data, {f"zebra/{i}.png": Image.new("L", (8, 8), 200) for i in range(2)})
    write(elsewhere, {f"moth/{i}.png": Image.new("L", (8, 8), 120) for i in range(4)})
    (data / "moth").symlink_to(elsewhere / "moth", target_is_directory=True)
    with caplog.at_level(logging.INFO, logger="genloom_image.folder"):
        dataset = ImageFolder(path=str(data), labels=True, val_fraction=0.5, condition="label")
    assert dataset.classes == ["ant", "moth", "zebra"]
    assert dataset.condition_classes == {"ant": 3, "moth": 4, "zebra": 2}
    assert f"3 classes in {data}: 0=ant (3), 1=moth (4), 2=zebra (2)" in caplog.text
    labels = torch.cat([dataset.split(s, ENCODER).tensors["label"] for s in ("train", "val")])
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert ImageFolder(path=str(data), labels=True).condition_classes is None  # condition=none


def test_exif_orientation_is_applied(tmp_path) -> None:
    # Stored 16 wide x 8 high, left half black, right half white. Orientation 6 says "rotate
    # 90 degrees clockwise to view": upright it is 8 x 16, top half black, bottom half white,
    # and so is its 8 x 8 center crop. Ignoring the tag would give a left/right crop instead.
    stored = Image.new("L", (16, 8), 0)
    stored.paste(255, (8, 0, 16, 8))
    exif = Image.Exif()
    exif[0x0112] = 6
    for i in range(2):
        stored.save(tmp_path / f"phone{i}.jpg", exif=exif, quality=100)
    dataset = ImageFolder(path=str(tmp_path), val_fraction=0.5)
    encoder = Pixels(resolution=8, channels=1)
    images = torch.cat([dataset.split(s, encoder).tensors["image"] for s in ("train", "val")])[:, 0]
    top, bottom = images[:, :3].mean(), images[:, 5:].mean()
    left, right = images[:, :, :3].mean(), images[:, :, 5:].mean()
    assert top < 0.1 and bottom > 0.9 and abs(left - right) < 0.05


def random_images(n: int, seed: int = 0) -> dict[str, Image.Image]:
    """``n`` RGB images of random pixels and sizes in two classes (``ant/``, ``bee/``)."""
    generator = np.random.default_rng(seed)
    return {
        f"{('ant', 'bee')[i % 2]}/{i:03d}.png": Image.fromarray(
            generator.integers(0, 256, (8 + i % 5, 9, 3), dtype=np.uint8))
        for i in range(n)
    }


def examples(data: torch.utils.data.Dataset) -> list[dict[str, torch.Tensor]]:
    return [data[i] for i in range(len(data))]


def test_lazy_examples_equal_the_examples_held_in_memory(tmp_path) -> None:
    write(tmp_path, random_images(16))
    options = {"path": str(tmp_path), "labels": True, "val_fraction": 0.25, "condition": "label"}
    eager, lazy = ImageFolder(**options), ImageFolder(**options, lazy=True)
    for split in ("train", "val"):
        held, decoded = examples(eager.split(split, ENCODER)), examples(lazy.split(split, ENCODER))
        assert len(held) == len(decoded) and len(held) == {"train": 12, "val": 4}[split]
        for a, b in zip(held, decoded, strict=True):
            assert a.keys() == b.keys() == {"image", "label", "condition"}
            assert all(torch.equal(a[k], b[k]) for k in a)
    assert not hasattr(lazy.split("train", ENCODER), "tensors")  # nothing decoded is kept


def test_lazily_a_non_image_is_skipped_up_front_and_a_corrupt_one_replaced_with_a_warning(
    tmp_path, caplog
) -> None:
    write(tmp_path, {f"{i}.png": Image.new("L", (8, 8), 10 * i) for i in range(4)})
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "2.png").write_bytes((tmp_path / "2.png").read_bytes()[:45])  # header only
    with caplog.at_level(logging.WARNING, logger="genloom_image.folder"):
        train = ImageFolder(path=str(tmp_path), val_fraction=0.5, lazy=True).split("train", ENCODER)
    (skipped,) = [r.getMessage() for r in caplog.records]
    assert "skipped 1 of 5 files" in skipped and "notes.txt" in skipped
    assert len(train) == 2  # 0.png and 2.png: every 2nd of the four images is for validation
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genloom_image.folder"):
        shades = [round(float(train[i]["image"][0, 0, 0]) * 255) for i in (1, 1, 0)]
    assert shades == [0, 0, 0]  # 2.png does not decode: the split's next image, 0.png, stands in
    (warning,) = [r.getMessage() for r in caplog.records]  # once per file
    assert "2.png passed the check before training but does not read now" in warning
    assert "dataset.strict=true" in warning


def test_lazily_strict_decodes_every_file_before_training(tmp_path) -> None:
    write(tmp_path, {"a.png": Image.new("L", (8, 8)), "b.png": Image.new("L", (8, 8))})
    (tmp_path / "cut.png").write_bytes((tmp_path / "a.png").read_bytes()[:45])
    with pytest.raises(ValueError, match=r"cut\.png is not a readable image.*dataset\.strict=false"):
        ImageFolder(path=str(tmp_path), strict=True, val_fraction=0.5, lazy=True).split("train", ENCODER)


def cached_split(root: Path, cache: Path, split: str = "train", **options) -> torch.utils.data.Dataset:
    return ImageFolder(path=str(root), val_fraction=0.25, lazy=True, cache_decoded=True,
                       cache_dir=str(cache), **options).split(split, ENCODER)


def entries(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.safetensors"))


def test_cached_decoded_examples_equal_the_decoded_ones_and_are_read_without_decoding(
    tmp_path, monkeypatch
) -> None:
    root, cache = tmp_path / "images", tmp_path / "cache"
    write(root, random_images(8))
    options = {"labels": True, "condition": "label"}
    lazy = ImageFolder(path=str(root), val_fraction=0.25, lazy=True, **options)
    decoded = examples(lazy.split("train", ENCODER))
    first = examples(cached_split(root, cache, **options))  # decodes and stores each image
    assert len(entries(cache)) == len(decoded) == 6
    opened = []
    monkeypatch.setattr("genloom_image.folder._open", lambda file: opened.append(file))
    second = examples(cached_split(root, cache, **options))  # a later run: reads the entries alone
    assert opened == []
    for a, b, c in zip(decoded, first, second, strict=True):
        assert a.keys() == b.keys() == c.keys() == {"image", "label", "condition"}
        assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    other = ImageFolder(path=str(root), val_fraction=0.25, lazy=True, cache_decoded=True,
                        cache_dir=str(cache)).split("train", Pixels(resolution=4, channels=3))
    with pytest.raises(ValueError, match="none of the 6 files"):  # another resolution is another key
        other[0]
    assert len(opened) == 6  # it decoded (here: failed to, _open being stubbed) every file


def cache_warnings(caplog) -> list[str]:
    """The decoded cache's warnings: caplog also holds what other loggers said (at INFO, once a
    test before this one in the process set the root logger to INFO, as the CLI does)."""
    return [r.getMessage() for r in caplog.records
            if r.name == "genloom.cache" and r.levelno >= logging.WARNING]


def test_a_changed_file_is_decoded_again_and_a_damaged_entry_rebuilt_with_a_warning(tmp_path, caplog) -> None:
    root, cache = tmp_path / "images", tmp_path / "cache"
    write(root, {f"{i}.png": Image.new("L", (8, 8), 10 * i) for i in range(4)})
    train = cached_split(root, cache)  # 0.png, 1.png, 2.png (3.png is for validation)
    assert [round(float(train[i]["image"][0, 0, 0]) * 255) for i in range(3)] == [0, 10, 20]
    Image.new("L", (8, 8), 200).save(root / "1.png")  # same size, a new mtime
    assert round(float(cached_split(root, cache)[1]["image"][0, 0, 0]) * 255) == 200
    assert len(entries(cache)) == 4  # the old entry is left, never read
    for path in entries(cache):
        path.write_bytes(path.read_bytes()[:-7])  # truncated
    mtimes = {path: path.stat().st_mtime_ns for path in entries(cache)}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genloom.cache"):
        again = cached_split(root, cache)
        shades = [round(float(again[i]["image"][0, 0, 0]) * 255) for i in range(3)]
    assert shades == [0, 200, 20]
    warnings = cache_warnings(caplog)
    assert len(warnings) == 3 and all("is damaged" in w and "decoding the file again" in w for w in warnings)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genloom.cache"):
        assert torch.equal(cached_split(root, cache)[2]["image"], again[2]["image"])
    assert cache_warnings(caplog) == []  # rebuilt
    assert sum(path.stat().st_mtime_ns != mtimes[path] for path in entries(cache)) == 3
    by_age = sorted(entries(cache), key=lambda path: path.stat().st_mtime_ns)
    by_age[-1].write_bytes(by_age[-2].read_bytes())  # a complete entry, of another file
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genloom.cache"):
        assert [round(float(again[i]["image"][0, 0, 0]) * 255) for i in range(3)] == [0, 200, 20]
    (foreign,) = cache_warnings(caplog)
    assert "written for another file or encoder" in foreign


def test_workers_writing_the_same_entries_at_once_leave_each_complete(tmp_path) -> None:
    root, cache = tmp_path / "images", tmp_path / "cache"
    write(root, random_images(12))
    train = cached_split(root, cache)
    order = [i for i in range(len(train)) for _ in range(2)]  # each index in both workers at once
    loader = torch.utils.data.DataLoader(train, batch_size=1, sampler=order, num_workers=2)
    loaded = [batch["image"][0] for batch in loader]
    held = examples(ImageFolder(path=str(root), val_fraction=0.25).split("train", ENCODER))
    assert all(torch.equal(image, held[i]["image"]) for image, i in zip(loaded, order, strict=True))
    assert len(entries(cache)) == len(train) and not list(cache.rglob("*.tmp"))
    again = cached_split(root, cache)
    assert all(torch.equal(again[i]["image"], held[i]["image"]) for i in range(len(train)))


def test_cache_decoded_needs_a_lazy_folder_and_an_encoder_that_names_its_settings(tmp_path) -> None:
    write(tmp_path / "images", random_images(4))
    with pytest.raises(ValueError, match=r"dataset\.cache_decoded=true .* set dataset\.lazy=true"):
        ImageFolder(path=str(tmp_path / "images"), cache_decoded=True)

    class Unnamed:  # an encoder without fingerprint(): its files are decoded each time
        def encode(self, media: Image.Image) -> torch.Tensor:
            return ENCODER.encode(media)

    train = ImageFolder(
        path=str(tmp_path / "images"), val_fraction=0.25, lazy=True, cache_decoded=True,
        cache_dir=str(tmp_path / "cache")).split("train", Unnamed())
    assert train[0]["image"].shape == (3, 8, 8) and not (tmp_path / "cache").exists()
