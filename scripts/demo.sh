#!/usr/bin/env bash
# Quickstart, command 1: set up a CPU environment and run the main job on the embedded demo data:
# SAQM trained with semi-supervised domain adaptation (natural images -> real ultrasound frames), evaluated on the
# held-out ultrasound test split (PLCC / SROCC / KRCC printed), TensorBoard logs written. The same test split is
# then scored with the pretrained model that ships in bundles/medical_saqm_iqa (no training), for comparison.
#   VENV      virtual environment to create or reuse (default .venv)
#   DEMO_DIR  where the bundle copy, demo data, model and logs go (default outputs/quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
DEMO_DIR="${DEMO_DIR:-outputs/quickstart}"
START=$(date +%s)
bash scripts/setup_env.sh "$VENV" demo
# shellcheck disable=SC1091
. "$VENV/bin/activate"
# MONAI warns on every `monai.bundle run` that configs may run code ($-expressions, _target_); these are this
# repository's own configs, so the demo hides that one warning (run the commands yourself to see it)
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore:parsing config_file:UserWarning}"
ROOT="$(pwd)"
rm -rf "$DEMO_DIR" && mkdir -p "$DEMO_DIR"
cp -r bundles/ultrasound_saqm_iqa "$DEMO_DIR/"
cd "$DEMO_DIR/ultrasound_saqm_iqa"
CONFIGS="'configs/train.json','configs/semi_supervised_da.json','configs/demo.json'"
echo "== training SAQM (semi-supervised domain adaptation, CPU demo settings) =="
python -m monai.bundle run --config_file "[$CONFIGS]"
echo "== evaluating the best model on the ultrasound test split =="
python -m monai.bundle run --config_file "[$CONFIGS,'configs/evaluate.json']"
echo "== scoring the same test split with the shipped pretrained SAQM (bundles/medical_saqm_iqa, no training) =="
monai-iqad score demo_data/datalist.json --key test --metric saqm --bundle "$ROOT/bundles/medical_saqm_iqa" \
    -o eval/shipped_model_scores.csv --no-progress
python - <<'PY'
import csv
import json
import os

from scipy import stats

rows = {r[0]: float(r[1]) for r in csv.reader(open("eval/metrics.csv")) if len(r) >= 2}
print("\nSAQM on the demo ultrasound test split (image-level scores vs MOS):")
for key in ("plcc", "plcc_logistic", "srocc", "krcc"):
    if key in rows:
        print(f"  {key.upper():14s} {rows[key]: .4f}")
test = json.load(open("demo_data/datalist.json"))["test"]
mos = {os.path.abspath(os.path.join("demo_data", d["image"])): float(d["mos"]) for d in test}
scores = csv.DictReader(open("eval/shipped_model_scores.csv"))
shipped = [(float(r["score"]), mos[os.path.abspath(r["image"])]) for r in scores]
x, y = zip(*shipped)
# not a held-out figure: the pretraining corpus holds other crops of these ultrasound recordings (never these MOS)
print("shipped pretrained SAQM (bundles/medical_saqm_iqa, not trained on this demo's MOS), same split:")
print(f"  {'PLCC':14s} {stats.pearsonr(x, y)[0]: .4f}\n  {'SROCC':14s} {stats.spearmanr(x, y)[0]: .4f}")
PY
echo
echo "per-image scores : $DEMO_DIR/ultrasound_saqm_iqa/eval/predictions.csv (shipped model: eval/shipped_model_scores.csv)"
echo "TensorBoard      : tensorboard --logdir $DEMO_DIR/ultrasound_saqm_iqa/eval"
echo "total time       : $(( $(date +%s) - START )) s"
