#!/usr/bin/env python3
"""Fit the fraud number-profile score on the Sichuan fraud data (docs/packs/fraud.md).

Standard library only. Reads users_train.csv (one row per phone number, label 1 = fraud) from
$TOCSIN_DATA_DIR/sichuan-fraud or ../shared/data/sichuan-fraud (relative to the repository),
fits a logistic regression by batch gradient descent on standardised features, checks it with
5-fold stratified cross-validation (fixed seed) and writes the weights as YAML to
examples/packs/fraud/profile_weights.yaml.

Every feature is first clamped to [0, cap] and divided by cap (cap = the 99th percentile of
the training rows), exactly as a Tocsin score feature with `cap` does, so the fitted model is a
Tocsin score: `value: x` (or `cap - x` for a feature that lowers the risk), `cap`, `weight`.

The decision threshold favours precision ("a warning that cries wolf is ignored"): on each
training fold it is the lowest probability at which the training precision reaches
--min-precision (default 0.95); the held-out fold is then scored with it.

The shipped rule (examples/packs/fraud/profile_rule.yaml, rule fraud.number_profile on the
profiles stream) is generated from the weights by --emit-rule, so the pack is reproducible:

    python3 tools/fit_fraud_profile.py                 # from the repository root
    python3 tools/fit_fraud_profile.py --min-precision 0.9 --output /tmp/w.yaml
    python3 tools/fit_fraud_profile.py --emit-rule examples/packs/fraud/profile_rule.yaml   # refit, weights + rule
    python3 tools/fit_fraud_profile.py --from-weights --emit-rule examples/packs/fraud/profile_rule.yaml  # no data needed
    python3 tools/fit_fraud_profile.py --from-weights --emit-rule examples/packs/fraud/profile_rule.yaml --check
"""
import argparse
import csv
import difflib
import math
import os
import random
import re
import sys

# Columns of users_train.csv used as features: those a profile built from call detail records
# can compute, tied to the practice signals (shared/data/README.md). They are fields of the
# profiles stream under the same names (pipeline/event.cc).
FEATURES = [
    ("opposite_unique", "distinct numbers called or calling (fan-out)"),
    ("phone2opposite_mean", "calls per counterpart (low: strangers, not contacts)"),
    ("voc_calltype1", "share of calls placed by the number (high: almost never receives calls)"),
    ("imeis", "devices used with the number"),
    ("call_dur_mean", "mean call duration, s"),
    ("call_dur_median", "median call duration, s"),
    ("voc_day_nunique", "days with calls"),
    ("voc_hour_nunique", "distinct hours of the day with calls"),
    ("county_name_nunique", "counties the number called from (1: static, as a SIM box)"),
    ("sms_count", "SMS messages (SIM boxes send none)"),
    ("month_ids", "months with records (low: a new SIM)"),
    ("busi_count", "app-usage records (mobile data sessions)"),
]
# The score feature's name and label in the rule, by the sign the fit gives the column:
# (when more raises the risk, when less raises it).
RULE_NAMES = {
    "opposite_unique": (("fan_out", "fan_out"), ("few_counterparts", "few_counterparts")),
    "phone2opposite_mean": (("repeat_contacts", "repeat_contacts"), ("strangers", "strangers")),
    "voc_calltype1": (("outgoing_only", "outgoing_only"), ("receives_calls", "receives_calls")),
    "imeis": (("devices", "multi_device"), ("single_device", "single_device")),
    "call_dur_mean": (("call_dur_mean", "call_duration"), ("short_mean_call", "short_calls")),
    "call_dur_median": (("long_median_call", "call_duration"), ("short_median_call", "short_calls")),
    "voc_day_nunique": (("active_days", "active_days"), ("few_active_days", "few_active_days")),
    "voc_hour_nunique": (("hours_active", "round_the_clock"), ("few_hours_active", "few_hours_active")),
    "county_name_nunique": (("many_counties", "roaming"), ("static_location", "static_location")),
    "sms_count": (("sms", "sms"), ("no_sms", "no_sms")),
    "month_ids": (("old_number", "old_number"), ("new_number", "new_sim")),
    "busi_count": (("app_usage", "app_usage"), ("no_app_usage", "no_app_usage")),
}
RULE_ID = "fraud.number_profile"
LABEL = "label"
SEED = 20261126
FOLDS = 5
CAP_PERCENTILE = 0.99
ITERATIONS = 400
LEARNING_RATE = 0.5
L2 = 1e-3


def find_data(repo_root):
    candidates = []
    if os.environ.get("TOCSIN_DATA_DIR"):
        candidates.append(os.path.join(os.environ["TOCSIN_DATA_DIR"], "sichuan-fraud"))
    candidates.append(os.path.normpath(os.path.join(repo_root, "..", "shared", "data", "sichuan-fraud")))
    candidates.append(os.path.normpath(os.path.join("..", "shared", "data", "sichuan-fraud")))
    for d in candidates:
        f = os.path.join(d, "users_train.csv")
        if os.path.isfile(f):
            return f
    sys.exit("fit_fraud_profile: users_train.csv not found; looked in:\n  " +
             "\n  ".join(candidates) +
             "\nSet TOCSIN_DATA_DIR to the folder that holds sichuan-fraud/users_train.csv.")


def load(path):
    xs, ys = [], []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c, _ in FEATURES if c not in (reader.fieldnames or [])] + \
                  ([LABEL] if LABEL not in (reader.fieldnames or []) else [])
        if missing:
            sys.exit(f"fit_fraud_profile: {path} lacks the columns {', '.join(missing)}")
        for row in reader:
            # A missing value means the number has no such records (no calls, no SMS): 0.
            xs.append([float(row[c]) if row[c].strip() not in ("", "nan", "NaN") else 0.0 for c, _ in FEATURES])
            ys.append(int(float(row[LABEL])))
    return xs, ys


def percentile(values, q):
    v = sorted(values)
    if not v:
        return 0.0
    k = (len(v) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class Model:
    """Clamp to [0, cap] / cap, standardise, logistic regression by gradient descent."""

    def fit(self, xs, ys):
        n, d = len(xs), len(xs[0])
        self.caps = []
        for j in range(d):
            c = percentile([max(0.0, r[j]) for r in xs], CAP_PERCENTILE)
            self.caps.append(c if c > 0 else 1.0)
        scaled = [self._scale(r) for r in xs]
        self.mean = [sum(r[j] for r in scaled) / n for j in range(d)]
        self.std = []
        for j in range(d):
            var = sum((r[j] - self.mean[j]) ** 2 for r in scaled) / n
            self.std.append(math.sqrt(var) if var > 0 else 1.0)
        z = [[(r[j] - self.mean[j]) / self.std[j] for j in range(d)] for r in scaled]
        w = [0.0] * d
        b = math.log(sum(ys) / (n - sum(ys)))  # start at the base rate
        for _ in range(ITERATIONS):
            gw = [0.0] * d
            gb = 0.0
            for row, y in zip(z, ys):
                err = sigmoid(b + sum(wj * xj for wj, xj in zip(w, row))) - y
                gb += err
                for j in range(d):
                    gw[j] += err * row[j]
            b -= LEARNING_RATE * gb / n
            for j in range(d):
                w[j] -= LEARNING_RATE * (gw[j] / n + L2 * w[j])
        self.w, self.b = w, b
        return self

    def _scale(self, r):
        return [min(max(x, 0.0), c) / c for x, c in zip(r, self.caps)]

    def proba(self, r):
        s = self._scale(r)
        return sigmoid(self.b + sum(wj * (sj - m) / sd for wj, sj, m, sd in zip(self.w, s, self.mean, self.std)))


def precision_first_threshold(probs, ys, min_precision):
    """Lowest threshold whose precision reaches min_precision (max recall under that
    constraint); if none does, the threshold of best F0.5."""
    pairs = sorted(zip(probs, ys), key=lambda t: -t[0])
    positives = sum(ys)
    tp = fp = 0
    best, best_f05 = None, (-1.0, 0.5)
    for i, (p, y) in enumerate(pairs):
        tp += y
        fp += 1 - y
        if i + 1 < len(pairs) and pairs[i + 1][0] == p:
            continue  # ties: decide after the last equal probability
        prec, rec = tp / (tp + fp), tp / positives if positives else 0.0
        if prec >= min_precision:
            best = p
        f05 = 1.25 * prec * rec / (0.25 * prec + rec) if prec + rec else 0.0
        if f05 > best_f05[0]:
            best_f05 = (f05, p)
    return best if best is not None else best_f05[1]


def metrics(probs, ys, thr):
    tp = sum(1 for p, y in zip(probs, ys) if p >= thr and y == 1)
    fp = sum(1 for p, y in zip(probs, ys) if p >= thr and y == 0)
    fn = sum(1 for p, y in zip(probs, ys) if p < thr and y == 1)
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return prec, rec, f1, tp, fp, fn


def stratified_folds(ys, k, seed):
    rng = random.Random(seed)
    folds = [[] for _ in range(k)]
    for label in (0, 1):
        idx = [i for i, y in enumerate(ys) if y == label]
        rng.shuffle(idx)
        for n, i in enumerate(idx):
            folds[n % k].append(i)
    return folds


def logit(p):
    return math.log(p / (1 - p))


def rule_score(features, x):
    """The score of one row exactly as Tocsin computes it from the rule (rules/engine.cc, Engine::score):
    each feature's value clamped to [0, cap], divided by cap, times weight, summed in order; the rule
    writes a feature that lowers the risk as `cap - x`. `features` holds the parameters as written."""
    total = 0.0
    for f, xj in zip(features, x):
        cap, weight = float(f["cap"]), float(f["weight"])
        v = xj if f["raises"] else float(f["cap"]) - xj
        total += min(max(v, 0.0), cap) / cap * weight
    return total


def parse_weights(path):
    """Reads a profile_weights.yaml written by this script (its own fixed format: no YAML library)."""
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        sys.exit(f"fit_fraud_profile: cannot read {path}: {e.strerror}")

    def scalar(key):
        m = re.search(rf"^{key}: (.+)$", text, re.M)
        if not m:
            sys.exit(f"fit_fraud_profile: {path} has no '{key}:' line; regenerate it with this script")
        return m.group(1).strip()

    w = {k: scalar(k) for k in ("min_precision", "folds", "threshold_probability", "intercept", "scale", "having")}
    w["levels"] = scalar("levels")
    m = re.search(r"^  - \{fold: mean, threshold: ([\d.]+), precision: ([\d.]+), recall: ([\d.]+), f1: ([\d.]+)\}", text, re.M)
    if not m:
        sys.exit(f"fit_fraud_profile: {path} has no cross-validation mean")
    w["cv_mean"] = {"threshold": m.group(1), "precision": m.group(2), "recall": m.group(3), "f1": m.group(4)}
    w["features"] = []
    for m in re.finditer(r'^  - \{name: (\w+), value: "([^"]+)", cap: ([^,]+), weight: ([^,]+), raises_risk: (true|false)\}', text, re.M):
        w["features"].append({"column": m.group(1), "value": m.group(2), "cap": m.group(3), "weight": m.group(4),
                              "raises": m.group(5) == "true"})
    if [f["column"] for f in w["features"]] != [c for c, _ in FEATURES]:
        sys.exit(f"fit_fraud_profile: the features of {path} are not {', '.join(c for c, _ in FEATURES)}")
    return w


def rule_yaml(w, weights_file):
    """The rule fraud.number_profile on the profiles stream, from the weights as written."""
    cv = w["cv_mean"]
    out = []
    out.append("# Fraud number-profile score on the profiles stream (docs/packs/fraud.md). Generated by")
    out.append(f"# tools/fit_fraud_profile.py from {weights_file}: do not edit. Regenerate with")
    out.append("#   python3 tools/fit_fraud_profile.py --emit-rule examples/packs/fraud/profile_rule.yaml                 # refit (needs the data)")
    out.append("#   python3 tools/fit_fraud_profile.py --from-weights --emit-rule examples/packs/fraud/profile_rule.yaml  # from the weights")
    out.append("# ctest packs.fraud_profile_rule checks that this file matches the weights.")
    out.append("#")
    out.append("# Each feature is a field of the profiles stream (`cap - x` for a field whose lower values raise")
    out.append("# the risk), clamped to [0, cap] and divided by cap, times its weight: the score is 0..100 and")
    out.append(f"# P(fraud) = 1 / (1 + exp(-({w['intercept']} + score * {w['scale']} / 100))). A missing field counts 0")
    out.append("# points, so producers send 0 for a count the number has none of (the model's missing value).")
    out.append("rules:")
    out.append(f"  - id: {RULE_ID}")
    out.append("    description: >")
    out.append("      Fitted number-profile score (logistic regression on the Sichuan fraud data,")
    out.append(f"      tools/fit_fraud_profile.py). {w['folds']}-fold cross-validation, threshold at training precision")
    out.append(f"      >= {w['min_precision']}: precision {float(cv['precision']):.3f}, recall {float(cv['recall']):.3f}, "
               f"F1 {float(cv['f1']):.3f}. Fires from the")
    out.append(f"      fitted threshold P(fraud) >= {w['threshold_probability']} (level high); the severity follows the level.")
    out.append("    stream: profiles")
    out.append("    key: [number]")
    out.append("    score:")
    out.append("      features:")
    for f in w["features"]:
        name, label = RULE_NAMES[f["column"]][0 if f["raises"] else 1]
        out.append(f"        - {{name: {name}, value: {f['value']}, cap: {f['cap']}, weight: {f['weight']}, label: {label}}}")
    out.append(f"      levels: {w['levels']}")
    out.append(f"    having: {w['having']}")
    out.append("    alert:")
    out.append("      type: fraud.number_profile")
    out.append("      severity: from_score")
    out.append('      title: "号码 {number} 画像风险评分 {score}（{level}）"')
    out.append('      summary: "{opposite_unique} 个通话对象、{imeis} 部设备、{voc_day_nunique} 天有通话、{month_ids} 个月有记录"')
    out.append("      labels: {pack: fraud}")
    return "\n".join(out) + "\n"


def write_or_check(path, text, check):
    if check:
        try:
            old = open(path, encoding="utf-8").read()
        except OSError:
            old = ""
        if old != text:
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True), path, "generated"))
            sys.exit(f"fit_fraud_profile: {path} does not match the weights; regenerate it (see --help)")
        print(f"{path} matches the weights")
        return
    if path == "-":
        sys.stdout.write(text)
        return
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {path}")


def main():
    repo_root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--min-precision", type=float, default=0.95,
                    help="precision the threshold must reach on the training rows (default 0.95)")
    ap.add_argument("--output", default=os.path.join(repo_root, "examples", "packs", "fraud", "profile_weights.yaml"),
                    help="the weights file to write (with --from-weights: to read)")
    ap.add_argument("--emit-rule", metavar="PATH",
                    help="also write the rule fraud.number_profile (profiles stream) as a rule file; - for stdout")
    ap.add_argument("--from-weights", action="store_true",
                    help="do not fit: read the weights from --output and only emit the rule (needs no data)")
    ap.add_argument("--check", action="store_true",
                    help="with --emit-rule: compare the rule file with the weights instead of writing it; exit 1 on a difference")
    args = ap.parse_args()
    if (args.from_weights or args.check) and not args.emit_rule:
        ap.error("--from-weights and --check need --emit-rule PATH")
    weights_name = os.path.basename(args.output)

    if args.from_weights:
        write_or_check(args.emit_rule, rule_yaml(parse_weights(args.output), weights_name), args.check)
        return

    path = find_data(repo_root)
    xs, ys = load(path)
    print(f"data: {path}: {len(ys)} numbers, {sum(ys)} fraud; {len(FEATURES)} features; "
          f"{FOLDS}-fold stratified CV, seed {SEED}, threshold at training precision >= {args.min_precision}")

    folds = stratified_folds(ys, FOLDS, SEED)
    rows = []
    print("| fold | threshold | precision | recall | F1 | TP | FP | FN |")
    print("|---|---|---|---|---|---|---|---|")
    for k in range(FOLDS):
        test = set(folds[k])
        tr = [i for i in range(len(ys)) if i not in test]
        model = Model().fit([xs[i] for i in tr], [ys[i] for i in tr])
        thr = precision_first_threshold([model.proba(xs[i]) for i in tr], [ys[i] for i in tr], args.min_precision)
        te = sorted(test)
        m = metrics([model.proba(xs[i]) for i in te], [ys[i] for i in te], thr)
        rows.append((thr,) + m)
        print(f"| {k + 1} | {thr:.3f} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} | {m[3]} | {m[4]} | {m[5]} |")
    mean = [sum(r[i] for r in rows) / FOLDS for i in range(4)]
    print(f"| mean | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} | {mean[3]:.3f} | | | |")

    # The shipped model: fitted on every row; its threshold is the median of the folds'.
    model = Model().fit(xs, ys)
    thr = sorted(r[0] for r in rows)[FOLDS // 2]

    # As a Tocsin score: logit = B + sum(a_j * clamp(x_j, 0, cap_j) / cap_j). A negative a_j is
    # written as the feature `cap - x` with weight |a_j| (B absorbs a_j), so every weight is
    # positive; the score is rescaled to 0..100.
    feats, intercept = [], model.b
    for (name, meaning), c, w, m, sd in zip(FEATURES, model.caps, model.w, model.mean, model.std):
        a = w / sd
        intercept -= w * m / sd
        if a < 0:
            intercept += a
        feats.append((name, meaning, c, a))
    total = sum(abs(a) for _, _, _, a in feats)

    def score_at(p):
        return max(0.0, min(100.0, 100.0 * (logit(p) - intercept) / total))

    levels = [("low", 0.0), ("medium", score_at(0.5)), ("high", score_at(thr)), ("critical", score_at(max(0.99, thr)))]

    # The parameters exactly as written (and as the rule uses them).
    written = [{"column": name, "meaning": meaning, "cap": f"{c:.6g}", "weight": f"{100.0 * abs(a) / total:.4f}",
                "raises": a >= 0, "value": name if a >= 0 else f"{c:.6g} - {name}"}
               for name, meaning, c, a in feats]
    having = f"score >= {levels[2][1]:.2f}"
    # In-sample (all training rows) with the written rule: what a replay of users_train.csv through
    # the shipped rule must flag (tests/app/replay_sichuan_test.cc). Not a performance estimate:
    # the cross-validation above is.
    cut = float(f"{levels[2][1]:.2f}")
    flagged = [rule_score(written, x) >= cut for x in xs]
    tp = sum(1 for f, y in zip(flagged, ys) if f and y == 1)
    fp = sum(1 for f, y in zip(flagged, ys) if f and y == 0)
    fn = sum(1 for f, y in zip(flagged, ys) if not f and y == 1)

    out = []
    out.append("# Fraud number-profile score, fitted by tools/fit_fraud_profile.py. Do not edit: rerun")
    out.append(f"#   python3 tools/fit_fraud_profile.py --min-precision {args.min_precision}")
    out.append(f"# Data: sichuan-fraud/users_train.csv ({len(ys)} numbers, {sum(ys)} fraud). Logistic regression")
    out.append(f"# (batch gradient descent, {ITERATIONS} iterations, rate {LEARNING_RATE}, L2 {L2}) on features clamped")
    out.append(f"# to [0, cap] / cap (cap: the {int(CAP_PERCENTILE * 100)}th percentile) and standardised; a missing value is 0.")
    out.append("# As a Tocsin score (docs/rules.md, Scoring): each feature is `value` with `cap` and `weight`;")
    out.append("# P(fraud) = 1 / (1 + exp(-(intercept + score * scale / 100))). See docs/packs/fraud.md.")
    out.append("# The rule fraud.number_profile (profile_rule.yaml) is generated from this file: --emit-rule.")
    out.append("model: logistic_regression")
    out.append(f"seed: {SEED}")
    out.append(f"folds: {FOLDS}")
    out.append(f"min_precision: {args.min_precision}")
    out.append(f"threshold_probability: {thr:.4f}")
    out.append(f"intercept: {intercept:.6f}")
    out.append(f"scale: {total:.6f}")
    out.append("cross_validation:")
    for k, r in enumerate(rows):
        out.append(f"  - {{fold: {k + 1}, threshold: {r[0]:.4f}, precision: {r[1]:.4f}, recall: {r[2]:.4f}, f1: {r[3]:.4f}}}")
    out.append(f"  - {{fold: mean, threshold: {mean[0]:.4f}, precision: {mean[1]:.4f}, recall: {mean[2]:.4f}, f1: {mean[3]:.4f}}}")
    out.append("features:")
    for f in written:
        out.append(f"  - {{name: {f['column']}, value: \"{f['value']}\", cap: {f['cap']}, weight: {f['weight']}, "
                   f"raises_risk: {'true' if f['raises'] else 'false'}}}   # {f['meaning']}")
    out.append("levels: {" + ", ".join(f"{n}: {v:.2f}" for n, v in levels) + "}")
    out.append(f"having: {having}")
    out.append("# The written rule on every training row (in-sample, not a performance estimate): a replay of")
    out.append("# users_train.csv through profile_rule.yaml flags exactly these (tests/app/replay_sichuan_test.cc).")
    out.append(f"rule_in_sample: {{rows: {len(ys)}, flagged: {sum(flagged)}, tp: {tp}, fp: {fp}, fn: {fn}}}")
    with open(args.output, "w", encoding="utf-8") as fh:
        fh.write("\n".join(out) + "\n")
    print(f"threshold (median of folds): P(fraud) >= {thr:.4f} = score >= {levels[2][1]:.2f}; wrote {args.output}")
    print(f"the written rule on the training rows: {sum(flagged)} flagged, TP {tp}, FP {fp}, FN {fn}")
    if args.emit_rule:
        write_or_check(args.emit_rule, rule_yaml(parse_weights(args.output), weights_name), args.check)


if __name__ == "__main__":
    main()
