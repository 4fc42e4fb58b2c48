"""MedPortal BLEU-4 / ROUGE as a local ``evaluate`` metric (no hub download needed).

    import evaluate
    from training.engine.metric_modules import MEDPORTAL_BLEU_ROUGE   # the folder's absolute path
    metric = evaluate.load(MEDPORTAL_BLEU_ROUGE)                     # mode "llamafactory"
    metric = evaluate.load(MEDPORTAL_BLEU_ROUGE, "standard")         # config_name selects the mode
    metric.compute(predictions=[...], references=[...])
    -> {"bleu-4": .., "rouge-1": .., "rouge-2": .., "rouge-l": .., "count": n, "mode": "llamafactory"}

Same numbers as ``training.engine.metrics.score_pairs`` (it calls it); ``per_sample=True`` in
``compute`` adds the per-sample scores.
"""

import datasets
import evaluate

from training.engine.metrics import DEFAULT_MODE, MODE_LABELS, MODES, score_pairs

_CITATION = """\
@inproceedings{papineni-etal-2002-bleu, title={BLEU: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing}, booktitle={ACL}, year={2002}}
@inproceedings{lin-2004-rouge, title={ROUGE: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew}, booktitle={Text Summarization Branches Out}, year={2004}}
@inproceedings{zheng2024llamafactory, title={LlamaFactory: Unified Efficient Fine-Tuning of 100+ Language Models},
  author={Zheng, Yaowei and others}, booktitle={ACL (System Demonstrations)}, year={2024}}
"""

_DESCRIPTION = """\
BLEU-4 over characters and ROUGE-1/2/L over jieba words for Chinese answers, per sample ×100
and averaged. Mode "llamafactory" (default) gives the numbers of LLaMA-Factory's
scripts/eval_bleu_rouge.py; mode "standard" uses rouge-score's counting. See
docs/evaluation-metrics.md.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated answers (str).
    references: list of reference answers (str), one per prediction.
    mode: "llamafactory" or "standard" (default: the config name, else "llamafactory").
    per_sample: also return "per_sample" (list of dicts), default False.
Returns:
    bleu-4, rouge-1, rouge-2, rouge-l: means of the per-sample scores (0..100, 4 decimals),
    count: number of pairs, mode: the mode used.
Examples:
    >>> metric = evaluate.load(path_to_this_folder)
    >>> metric.compute(predictions=["多喝水，注意休息。"], references=["注意休息，多喝水。"])["count"]
    1
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MedportalBleuRouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            reference_urls=["https://github.com/hiyouga/LLaMA-Factory/blob/main/scripts/eval_bleu_rouge.py"],
        )

    def _compute(self, predictions, references, mode=None, per_sample=False):
        if mode is None:
            mode = DEFAULT_MODE if self.config_name == "default" else self.config_name
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
        result = score_pairs(list(predictions), list(references), mode=mode)
        out = {**result["summary"], "mode": mode, "mode_label": MODE_LABELS[mode]}
        if per_sample:
            out["per_sample"] = result["per_sample"]
        return out
