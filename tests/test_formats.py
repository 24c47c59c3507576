"""Every dataset format read from annotation files written here in the exact shipped layout.

Video files are created empty: readers only locate them (decoding is tested in test_ffmpeg/test_sharding).
"""

import json
from pathlib import Path

import pytest

from sifar.data.formats import ReadRequest, get_format, list_formats, read_split
from sifar.data.formats.csv_list import RepeatedVideoWarning
from sifar.data.formats.records import VideoRecord, sanitize_key, with_unique_keys
from sifar.data.formats.source_files import MissingLabelFile


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def by_key(index) -> dict[str, VideoRecord]:
    return {r.key: r for r in index.records}


def test_registry_lists_every_dataset():
    assert list_formats() == ["ssv2", "kinetics400", "mit", "jester", "diving48", "csv"]
    with pytest.raises(KeyError, match="unknown dataset format 'ucf'.*ssv2"):
        get_format("ucf")


def test_keys_are_sanitized_and_unique():
    assert sanitize_key("a/b.c\\d") == "a_b_c_d"
    records = [VideoRecord("a_b", "a/b.mp4", None), VideoRecord("a_b", "a_b.mp4", None),
               VideoRecord("a_b", "a.b.mp4", None)]
    assert [r.key for r in with_unique_keys(records)] == ["a_b", "a_b_2", "a_b_3"]


# --- Something-Something V2 -------------------------------------------------------------------------------

SSV2_LABELS = {"Holding something next to something": "1", "Putting something on a surface": "0",
               "Something falling like a feather or paper": "2"}


def ssv2_tree(root: Path) -> Path:
    write(root / "labels" / "something-something-v2-labels.json", json.dumps(SSV2_LABELS))
    write(root / "labels" / "something-something-v2-train.json", json.dumps([
        {"id": "78687", "label": "holding potato next to vicks vaporub bottle",
         "template": "Holding [something] next to [something]", "placeholders": ["potato", "vicks vaporub bottle"]},
        {"id": "42326", "label": "putting a cup on a table", "template": "Putting [something] on a surface",
         "placeholders": ["a cup"]},
        {"id": "100", "label": "a feather falling like a feather or paper",
         "template": "[Something] falling like a feather or paper", "placeholders": ["a feather"]},
    ]))
    write(root / "labels" / "something-something-v2-validation.json", json.dumps([
        {"id": "1", "label": "putting pen on desk", "template": "Putting [something] on a surface",
         "placeholders": ["pen"]},
    ]))
    write(root / "labels" / "something-something-v2-test.json", json.dumps([{"id": "1420"}, {"id": "7"}]))
    for video_id in ("78687", "42326", "1", "1420", "7"):
        touch(root / "20bn-something-something-v2" / f"{video_id}.webm")
    return root


def test_ssv2_classes_labels_and_videos_in_subfolders(tmp_path):
    index = read_split("ssv2", ReadRequest(ssv2_tree(tmp_path), "train"))
    assert index.classes == ["Putting something on a surface", "Holding something next to something",
                             "Something falling like a feather or paper"]
    records = by_key(index)
    assert (records["78687"].label, records["78687"].label_name) == (1, "Holding something next to something")
    assert records["78687"].source == "20bn-something-something-v2/78687.webm"
    assert records["78687"].path == tmp_path / "20bn-something-something-v2" / "78687.webm"
    assert records["42326"].label == 0
    # Capitalised placeholder "[Something]" loses its brackets like the others; the video is missing.
    assert (records["100"].label, records["100"].path, records["100"].source) == (2, None, "100.webm")


def test_ssv2_validation_and_unlabeled_test_split(tmp_path):
    root = ssv2_tree(tmp_path)
    assert [(r.key, r.label) for r in read_split("ssv2", ReadRequest(root, "val")).records] == [("1", 0)]
    test = read_split("ssv2", ReadRequest(root, "test"))
    assert [(r.key, r.label, r.label_name) for r in test.records] == [("1420", -1, None), ("7", -1, None)]
    assert all(r.path is not None for r in test.records)


def test_ssv2_missing_files_and_unknown_templates(tmp_path):
    with pytest.raises(MissingLabelFile, match=f"something-something-v2-labels.json in {tmp_path}"):
        read_split("ssv2", ReadRequest(tmp_path, "train"))
    write(tmp_path / "something-something-v2-labels.json", json.dumps(SSV2_LABELS))
    with pytest.raises(MissingLabelFile, match="ssv2 val list: expected something-something-v2-validation.json"):
        read_split("ssv2", ReadRequest(tmp_path, "val"))
    write(tmp_path / "something-something-v2-train.json",
          json.dumps([{"id": "5", "template": "Spinning [something]", "placeholders": ["a top"]}]))
    with pytest.raises(ValueError, match="label 'Spinning something' is not in .*labels.json"):
        read_split("ssv2", ReadRequest(tmp_path, "train"))


# --- Kinetics-400 -------------------------------------------------------------------------------------------

KINETICS_TRAIN = """label,youtube_id,time_start,time_end,split,is_cc
abseiling,--07WQ2iBlw,1,11,train,0
"massaging person's head",-0aWlsTasTM,14,24,train,0
abseiling,0347ZoDXyP0,9,19,train,0
zumba,2K0Jp7yXJx0,1000,1010,train,1
"""


def test_kinetics_csv_folders_per_label_and_sorted_classes(tmp_path):
    write(tmp_path / "annotations" / "train.csv", KINETICS_TRAIN)
    touch(tmp_path / "train" / "abseiling" / "--07WQ2iBlw_000001_000011.mp4")
    touch(tmp_path / "train" / "massaging person's head" / "-0aWlsTasTM_000014_000024.mp4")
    touch(tmp_path / "train" / "zumba" / "2K0Jp7yXJx0_001000_001010.mkv")   # another container is found too
    index = read_split("kinetics400", ReadRequest(tmp_path, "train"))
    assert index.classes == ["abseiling", "massaging person's head", "zumba"]
    records = by_key(index)
    assert records["--07WQ2iBlw_000001_000011"].label == 0
    assert records["--07WQ2iBlw_000001_000011"].source == "train/abseiling/--07WQ2iBlw_000001_000011.mp4"
    assert records["-0aWlsTasTM_000014_000024"].label_name == "massaging person's head"
    assert records["2K0Jp7yXJx0_001000_001010"].path.suffix == ".mkv"
    assert records["0347ZoDXyP0_000009_000019"].path is None
    assert records["0347ZoDXyP0_000009_000019"].source == "0347ZoDXyP0_000009_000019.mp4"


@pytest.mark.parametrize("name", ["validate.csv", "val.csv", "kinetics-400_val.csv"])
def test_kinetics_validation_file_names_and_fixed_class_list(tmp_path, name):
    write(tmp_path / name, "label,youtube_id,time_start,time_end,split\nzumba,abc,3,13,val\n")
    touch(tmp_path / "abc_000003_000013.mp4")
    index = read_split("kinetics400", ReadRequest(tmp_path, "val", classes=["abseiling", "yoga", "zumba"]))
    assert index.classes == ["abseiling", "yoga", "zumba"]
    assert [(r.key, r.label) for r in index.records] == [("abc_000003_000013", 2)]
    with pytest.raises(ValueError, match="labels not in the given class list: zumba"):
        read_split("kinetics400", ReadRequest(tmp_path, "val", classes=["abseiling"]))


def test_kinetics_unlabeled_test_csv_and_annotations_option(tmp_path):
    write(tmp_path / "kinetics-400_test.csv", "youtube_id,time_start,time_end,split\nxyz,0,10,test\n")
    test = read_split("kinetics400", ReadRequest(tmp_path, "test"))
    assert [(r.key, r.label, r.label_name) for r in test.records] == [("xyz_000000_000010", -1, None)]
    other = write(tmp_path / "elsewhere" / "my_list.csv", KINETICS_TRAIN)
    assert len(read_split("kinetics400", ReadRequest(tmp_path, "train", annotations=other)).records) == 4
    write(tmp_path / "bad" / "train.csv", "label,id\nx,y\n")
    with pytest.raises(ValueError, match="missing column"):
        read_split("kinetics400", ReadRequest(tmp_path / "bad", "train"))


def test_kinetics_missing_csv_names_every_expected_file(tmp_path):
    with pytest.raises(MissingLabelFile, match="validate.csv or val.csv or kinetics-400_val.csv"):
        read_split("kinetics400", ReadRequest(tmp_path, "val"))


# --- Moments in Time ---------------------------------------------------------------------------------------


def mit_tree(root: Path, header: bool = False) -> Path:
    write(root / "Moments_in_Time_Mini" / "moments_categories.txt", "clapping,1\naiming,0\nyawning,2\n")
    write(root / "Moments_in_Time_Mini" / "trainingSet.csv",
          ("filename,label,positive responses,negative responses\n" if header else "")
          + "aiming/getty-aim-1.mp4,aiming,3,0\nclapping/yt-abc_12.mp4,clapping,2,1\n")
    write(root / "Moments_in_Time_Mini" / "validationSet.csv", "yawning/flickr-9.mp4,yawning,3,0\n")
    touch(root / "Moments_in_Time_Mini" / "training" / "aiming" / "getty-aim-1.mp4")
    touch(root / "Moments_in_Time_Mini" / "training" / "clapping" / "yt-abc_12.mp4")
    touch(root / "Moments_in_Time_Mini" / "validation" / "yawning" / "flickr-9.mp4")
    return root


@pytest.mark.parametrize("header", [False, True])
def test_mit_categories_and_split_folders(tmp_path, header):
    root = mit_tree(tmp_path, header)
    train = read_split("mit", ReadRequest(root, "train"))
    assert train.classes == ["aiming", "clapping", "yawning"]
    assert [(r.key, r.label, r.source) for r in train.records] == [
        ("aiming_getty-aim-1", 0, "Moments_in_Time_Mini/training/aiming/getty-aim-1.mp4"),
        ("clapping_yt-abc_12", 1, "Moments_in_Time_Mini/training/clapping/yt-abc_12.mp4")]
    val = read_split("mit", ReadRequest(root, "val"))
    assert [(r.label_name, r.path is not None) for r in val.records] == [("yawning", True)]


def test_mit_errors(tmp_path):
    with pytest.raises(MissingLabelFile, match="moments_categories.txt"):
        read_split("mit", ReadRequest(tmp_path, "train"))
    with pytest.raises(ValueError, match="mit has no 'test' split"):
        read_split("mit", ReadRequest(mit_tree(tmp_path), "test"))
    write(tmp_path / "Moments_in_Time_Mini" / "trainingSet.csv", "a/b.mp4,dancing,3,0\n")
    with pytest.raises(ValueError, match="label 'dancing' is not in .*moments_categories.txt"):
        read_split("mit", ReadRequest(tmp_path, "train"))


# --- Jester ----------------------------------------------------------------------------------------------------


def jester_tree(root: Path) -> Path:
    write(root / "jester-v1-labels.csv", "Swiping Left\nSwiping Right\nDoing other things\n")
    write(root / "jester-v1-train.csv", "34870;Swiping Right\n56557;Doing other things\n")
    write(root / "jester-v1-validation.csv", "9223;Swiping Left\n")
    write(root / "jester-v1-test.csv", "12\n13\n")
    for video_id in ("34870", "56557", "9223", "12"):
        touch(root / "20bn-jester-v1" / video_id / "00001.jpg")
    return root


def test_jester_frame_folders_labels_by_line_and_unlabeled_test(tmp_path):
    root = jester_tree(tmp_path)
    train = read_split("jester", ReadRequest(root, "train"))
    assert train.classes == ["Swiping Left", "Swiping Right", "Doing other things"]
    assert [(r.key, r.label, r.source) for r in train.records] == [
        ("34870", 1, "20bn-jester-v1/34870"), ("56557", 2, "20bn-jester-v1/56557")]
    assert all(r.frame_folder and r.fps == 12.0 for r in train.records)
    assert read_split("jester", ReadRequest(root, "val")).records[0].label == 0
    test = read_split("jester", ReadRequest(root, "test"))
    assert [(r.key, r.label, r.path is None) for r in test.records] == [("12", -1, False), ("13", -1, True)]
    assert get_format("jester").default_short_side == 0


# --- Diving48 ----------------------------------------------------------------------------------------------


def diving48_tree(root: Path) -> Path:
    write(root / "Diving48_vocab.json", json.dumps([["Back", "15som", "05Twis", "FREE"],
                                                     ["Forward", "25som", "NoTwis", "PIKE"]]))
    write(root / "Diving48_V2_train.json", json.dumps([
        {"vid_name": "-mmq0PT-u8k_00155", "label": 1, "start_frame": 0, "end_frame": 184},
        {"vid_name": "9jZYYHj-RFE_00009", "label": 0, "start_frame": 12, "end_frame": 40}]))
    write(root / "Diving48_V2_test.json", json.dumps([
        {"vid_name": "zzz_00001", "label": 0, "start_frame": 3, "end_frame": 50}]))
    touch(root / "rgb" / "-mmq0PT-u8k_00155.mp4")
    touch(root / "rgb" / "9jZYYHj-RFE_00009.mp4")
    touch(root / "rgb" / "zzz_00001.mp4")
    return root


def test_diving48_vocab_names_and_trimming(tmp_path):
    root = diving48_tree(tmp_path)
    train = read_split("diving48", ReadRequest(root, "train"))
    assert train.classes == ["Back 15som 05Twis FREE", "Forward 25som NoTwis PIKE"]
    records = by_key(train)
    record = records["9jZYYHj-RFE_00009"]
    assert (record.label, record.label_name, record.start_frame, record.end_frame) == (
        0, "Back 15som 05Twis FREE", 12, 40)
    assert record.source == "rgb/9jZYYHj-RFE_00009.mp4"
    # No separate validation set: val reads the test list.
    assert [r.key for r in read_split("diving48", ReadRequest(root, "val")).records] == ["zzz_00001"]


def test_diving48_label_outside_vocabulary(tmp_path):
    root = diving48_tree(tmp_path)
    write(root / "Diving48_V2_train.json", json.dumps([{"vid_name": "a", "label": 7, "start_frame": 0,
                                                        "end_frame": 5}]))
    with pytest.raises(ValueError, match="label 7 is outside .*2 classes"):
        read_split("diving48", ReadRequest(root, "train"))


# --- generic csv ----------------------------------------------------------------------------------------------


def test_csv_names_sorted_header_and_commas_in_paths(tmp_path):
    write(tmp_path / "train.csv", "path,label\nclips/b.mp4,walk\nclips/a, the first.mp4,run\nclips/c.mp4,walk\n")
    touch(tmp_path / "clips" / "b.mp4")
    touch(tmp_path / "clips" / "a, the first.mp4")
    index = read_split("csv", ReadRequest(tmp_path, "train"))
    assert index.classes == ["run", "walk"]
    assert [(r.key, r.label, r.label_name, r.path is not None) for r in index.records] == [
        ("clips_b", 1, "walk", True), ("clips_a, the first", 0, "run", True), ("clips_c", 1, "walk", False)]


def test_csv_integer_labels_and_given_class_list(tmp_path):
    lst = write(tmp_path / "lists" / "mine.txt", "v0.mp4,0\nv2.mp4,2\n")
    index = read_split("csv", ReadRequest(tmp_path, "train", annotations=lst))
    assert index.classes == ["0", "1", "2"]
    assert [(r.label, r.label_name) for r in index.records] == [(0, "0"), (2, "2")]
    named = read_split("csv", ReadRequest(tmp_path, "train", annotations=lst, classes=["cat", "dog", "eel"]))
    assert [r.label_name for r in named.records] == ["cat", "eel"]
    with pytest.raises(ValueError, match="label 2 but the given class list has 2 names"):
        read_split("csv", ReadRequest(tmp_path, "train", annotations=lst, classes=["cat", "dog"]))


def test_csv_bad_lines_and_missing_list(tmp_path):
    with pytest.raises(MissingLabelFile, match=f"expected val.csv in {tmp_path}.*--annotations"):
        read_split("csv", ReadRequest(tmp_path, "val"))
    write(tmp_path / "train.csv", "a.mp4,0\njust-a-path.mp4\n")
    with pytest.raises(ValueError, match="train.csv line 2: expected 'path,label'"):
        read_split("csv", ReadRequest(tmp_path, "train"))


def test_csv_videos_listed_twice_are_warned_about_with_their_lines(tmp_path):
    write(tmp_path / "train.csv", "path,label\na.mp4,walk\nb.mp4,run\na.mp4,walk\nb.mp4,walk\nc.mp4,run\n")
    with pytest.warns(RepeatedVideoWarning) as caught:
        index = read_split("csv", ReadRequest(tmp_path, "train"))
    assert len(caught) == 1 and str(caught[0].message) == (
        f"{tmp_path / 'train.csv'}: 2 videos listed more than once, each is sharded once per line: a.mp4 on lines "
        "2, 4; b.mp4 on lines 3, 5 (labels run, walk)")
    assert [r.key for r in index.records] == ["a", "b", "a_2", "b_2", "c"]
    many = "".join(f"v{i}.mp4,0\nv{i}.mp4,0\n" for i in range(7))
    with pytest.warns(RepeatedVideoWarning, match="7 videos listed more than once.*v4.mp4 on lines 9, 10; and 2 more$"):
        read_split("csv", ReadRequest(tmp_path, "train", annotations=write(tmp_path / "many.csv", many)))


def test_csv_with_a_boxes_column_gives_each_record_its_boxes(tmp_path):
    write(tmp_path / "train.csv", 'path,label,boxes\n"clips/a, b.mp4",walk,"[[1,2,5,6],null]"\n'
                                  'clips/c.mp4,run,"[[0,0,4,4.5],[1,1,2,2]]"\n')
    index = read_split("csv", ReadRequest(tmp_path, "train"))
    assert [(r.source, r.label_name, r.boxes) for r in index.records] == [
        ("clips/a, b.mp4", "walk", ((1, 2, 5, 6), None)), ("clips/c.mp4", "run", ((0, 0, 4, 4.5), (1, 1, 2, 2)))]
    plain = write(tmp_path / "plain.csv", "clips/c.mp4,run\n")
    assert read_split("csv", ReadRequest(tmp_path, "train", annotations=plain)).records[0].boxes is None


@pytest.mark.parametrize("line, message", [
    ('a.mp4,walk,"[[1,2,5,6]"', "line 2: bad boxes"),                   # not JSON
    ('a.mp4,walk,"[]"', "line 2: bad boxes: expected a non-empty list"),
    ('a.mp4,walk,"[[5,2,1,6]]"', r"frame 0: expected \[x0, y0, x1, y1\] with x0 < x1"),
    ('a.mp4,walk,"[[1,2,5]]"', "frame 0"),
    ('a.mp4,walk,"[[1,2,5,true]]"', "frame 0"),
    ("a.mp4,walk", "expected 'path,label,boxes'"),
    ("a.mp4,walk,[1,2]", "got 4 fields"),                                 # unquoted JSON
])
def test_csv_bad_boxes_name_the_file_and_line(tmp_path, line, message):
    write(tmp_path / "train.csv", f"path,label,boxes\n{line}\n")
    with pytest.raises(ValueError, match=message) as caught:
        read_split("csv", ReadRequest(tmp_path, "train"))
    assert "train.csv" in str(caught.value)
