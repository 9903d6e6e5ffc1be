"""Exports: a trained classifier as a plain state dict + JSON, a scan as NWB read back equal."""

import json

import numpy as np
import pytest

from neural_reg import export
from pipeline.errors import NeuralRegError


def _neural_classifier(populated) -> dict:
    from schemas import classifier

    return (classifier.TrainedClassifier & {"regulariser_hash": populated["regulariser"]["Neural"]}).keys()[0]


def test_classifier_export_reloads_without_neural_reg_and_names_its_scans(populated, tmp_path):
    import torch

    from pipeline.classifier.resnet import build_classifier
    from schemas import classifier, recording

    key = _neural_classifier(populated)
    pt, meta_path = export.export_classifier(key, tmp_path / "neural.pt")
    assert meta_path == tmp_path / "neural.json" and not list(tmp_path.glob(".*"))
    meta = json.loads(meta_path.read_text())

    # what the JSON names rebuilds the network; the state dict is plain tensors
    model = build_classifier(meta["architecture"]["arch"], meta["task"]["n_classes"])
    model.load_state_dict(torch.load(pt, weights_only=True))
    model.eval()
    x = torch.rand(6, *meta["input"]["shape"][1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), classifier.load_trained(key)(x).numpy())

    assert meta["key"] == {k: (int(v) if k == "classifier_seed" else v) for k, v in key.items()}
    assert meta["regulariser"]["alpha"] > 0 and meta["regulariser"]["target"]["kind"] == "neural-model"
    assert np.isclose(sum(meta["results"]["gamma"].values()), 1, atol=1e-5)
    assert set(meta["results"]["gamma"]) == set(meta["regulariser"]["layers"])
    assert meta["results"]["test_accuracy"] == pytest.approx(
        float((classifier.TrainedClassifier & key).fetch1("test_accuracy")))
    scans = {(s["animal_id"], s["session"], s["scan_idx"]) for s in meta["lineage"]["scans"]}
    assert scans == {(s["animal_id"], s["session"], s["scan_idx"]) for s in
                     (recording.Scan & {"animal_id": "sim21-g2"}).keys()} and scans
    assert meta["code"]["exported_with"]["version"]

    # the None control has no target and no scans; names work in place of hashes
    # (the experiment has two unregularised classifiers: the None control and the adversarially trained positive
    # control; the schedule's name tells them apart)
    none = (classifier.TrainedClassifier * classifier.Regulariser.proj("regulariser_name")
            * classifier.TrainConfig.proj("train_name")
            & {"regulariser_hash": populated["regulariser"]["None"], "train_name": "tiny-cpu"}
            ).fetch1("regulariser_name")
    _, none_json = export.export_classifier({"regulariser_name": none, "train_name": "tiny-cpu"},
                                            tmp_path / "none.pth")
    none_meta = json.loads(none_json.read_text())
    assert none_meta["regulariser"]["target"] is None and none_meta["lineage"]["scans"] == []


def test_scan_exports_to_nwb_and_reads_back_equal(populated, tmp_path):
    import pynwb
    from pynwb import NWBHDF5IO

    from schemas import recording

    key = recording.Scan.keys(order_by="KEY")[0]
    cli_key = {k: str(v) for k, v in key.items()}  # as `attr=value` pairs arrive
    path = export.export_scan(cli_key, tmp_path / "scan.nwb")
    back, stored = export.read_scan_nwb(path), recording.load_scan(key)
    for field in ("images", "image_ids", "trial_idx", "trial_image_ids", "tiers", "responses", "behavior",
                  "pupil_center", "unit_ids", "areas", "layers"):
        a, b = getattr(back, field), getattr(stored, field)
        assert a.dtype == b.dtype and a.shape == b.shape, field
        np.testing.assert_array_equal(a, b, err_msg=field)
    if stored.positions is None:
        assert back.positions is None
    else:
        np.testing.assert_array_equal(back.positions, stored.positions)
    assert back.extra["export"]["key"] == key
    back.validate()

    # a neuroscientist's view: valid NWB, and the standard places hold what they should
    assert pynwb.validate(path=str(path)) == []
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert nwb.subject.subject_id == key["animal_id"]
        assert len(nwb.trials) == stored.n_trials and len(nwb.stimulus_template["images"].images) == len(
            stored.image_ids)
        assert nwb.processing["ophys"]["neurons"]["unit_id"].data[:].tolist() == stored.unit_ids.tolist()


def test_bad_exports_fail_clearly_and_write_nothing(populated, tmp_path, monkeypatch):
    import torch

    from schemas import recording

    key = recording.Scan.keys(order_by="KEY")[0]
    with pytest.raises(NeuralRegError, match=r"no scan matches .*nobody.*Fix"):
        export.export_scan({"animal_id": "nobody", "session": 1, "scan_idx": 1}, tmp_path / "x.nwb")
    with pytest.raises(NeuralRegError, match=r"no trained classifier matches .*Fix"):
        export.export_classifier({"train_hash": "0" * 32}, tmp_path / "x.pt")
    with pytest.raises(NeuralRegError, match=r"matches \d+ rows.*Fix: add"):
        export.export_scan({"animal_id": key["animal_id"]}, tmp_path / "x.nwb")
    with pytest.raises(NeuralRegError, match=r"not attributes.*Fix"):
        export.export_scan({**key, "sesion": 1}, tmp_path / "x.nwb")
    with pytest.raises(NeuralRegError, match=r"\.nwb"):
        export.export_scan(key, tmp_path / "x.h5")
    assert list(tmp_path.iterdir()) == []

    existing = tmp_path / "scan.nwb"
    existing.write_text("keep me")
    with pytest.raises(NeuralRegError, match="already exists.*--overwrite"):
        export.export_scan(key, existing)
    assert existing.read_text() == "keep me"
    export.export_scan(key, existing, overwrite=True)
    assert export.read_scan_nwb(existing).n_trials == recording.load_scan(key).n_trials
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nwb"]  # no temporary left behind

    def broken_save(obj, f, *args, **kwargs):
        open(f, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export.export_classifier(_neural_classifier(populated), tmp_path / "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nwb"]  # neither file, nor a temporary

    with pytest.raises(NeuralRegError, match="not a readable NWB file"):
        (tmp_path / "junk.nwb").write_text("junk")
        export.read_scan_nwb(tmp_path / "junk.nwb")


def test_parse_key():
    assert export.parse_key(["animal_id=sim0", "session=1"]) == {"animal_id": "sim0", "session": "1"}
    with pytest.raises(NeuralRegError, match="attr=value"):
        export.parse_key(["sim0"])
