"""The source article as data: its tables, timeline, diagrams, trends and references.

Every figure of the article is re-drawn from these tables by :mod:`mmcourse.viz.figures`, so a reader can see (and
change) exactly what a figure claims. Section numbers (§) refer to the article.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "TITLE", "COMPARISON_TABLE", "Milestone", "ERAS", "TIMELINE", "REPRESENTATION_LAYERS", "REPRESENTATION_EDGES",
    "TRANSFORMER_LAYERS", "RETRIEVAL_FLOW", "TRENDS", "APPLICATIONS", "MODEL_SCALES", "REFERENCES",
]

TITLE = "多模态技术深度探索：融合视觉与语言的AI新范式 (Multimodal AI: fusing vision and language)"

#: §1.1 — unimodal vs multimodal AI: (property, unimodal, multimodal), in English with the article's Chinese terms.
COMPARISON_TABLE: list[tuple[str, str, str]] = [
    ("data types 数据类型", "one (text or image)", "several (text + image + audio ...)"),
    ("information source 信息来源", "one channel", "complementary channels"),
    ("depth of understanding 理解深度", "surface level", "deep cross-modal semantics"),
    ("applications 应用场景", "narrow, task-specific", "complex, open-ended"),
    ("fault tolerance 容错能力", "low: one source to rely on", "higher: sources check each other"),
]


@dataclass(frozen=True)
class Milestone:
    """One event of the Fig.1 timeline."""

    year: int
    name: str
    what: str
    era: str


#: Eras of Fig.1 (§1.2: "from early simple fusion to today's deep collaborative learning"), in order.
ERAS: list[tuple[str, int, int]] = [
    ("early fusion of hand-crafted features", 1976, 2011),
    ("deep encoders per modality", 2012, 2018),
    ("vision-language pre-training", 2019, 2020),
    ("contrastive & generative foundation models", 2021, 2022),
    ("multimodal large language models", 2023, 2025),
]

#: §1.2, Fig.1 — milestones of multimodal AI (years of first publication). A reconstruction: the article's image
#: is lost (only its caption survives), so these milestones are the course's, chosen to fit §1.2's text.
TIMELINE: list[Milestone] = [
    Milestone(1976, "McGurk effect", "seeing lips changes what we hear", ERAS[0][0]),
    Milestone(1989, "AV speech recognition", "lip images help speech recognisers", ERAS[0][0]),
    Milestone(2014, "Show and Tell", "CNN encoder + RNN decoder captions images", ERAS[1][0]),
    Milestone(2015, "VQA", "visual question answering benchmark", ERAS[1][0]),
    Milestone(2017, "Transformer", "attention becomes the universal fusion operator", ERAS[1][0]),
    Milestone(2019, "ViLBERT / LXMERT", "two-stream transformers with cross-attention", ERAS[2][0]),
    Milestone(2020, "UNITER", "single-stream pre-training with MLM, ITM", ERAS[2][0]),
    Milestone(2021, "CLIP / ALIGN", "contrastive pre-training on web image-text pairs", ERAS[3][0]),
    Milestone(2021, "DALL-E / ViLT / ALBEF", "text-to-image; patch-only VLP; align before fuse", ERAS[3][0]),
    Milestone(2022, "BLIP / Flamingo", "captioning-filtering; few-shot visual LLM", ERAS[3][0]),
    Milestone(2023, "GPT-4V / LLaVA / BLIP-2", "LLMs that see", ERAS[4][0]),
    Milestone(2024, "GPT-4o", "one model for text, vision and audio in real time", ERAS[4][0]),
]

#: §2.1, Fig.2 — cross-modal representation learning, layer by layer (bottom to top). The article's text keeps only
#: the figure's boxes grouped by layer (输入层, 编码层 with encoders and features, 融合层, 应用层), not the image:
#: this table and :data:`REPRESENTATION_EDGES` are a reconstruction from it.
REPRESENTATION_LAYERS: list[tuple[str, list[str]]] = [
    ("input layer 输入层", ["text data", "image data", "audio data"]),
    ("encoding layer 编码层", ["text encoder", "vision encoder", "audio encoder"]),
    ("(encoder outputs)", ["text features", "visual features", "audio features"]),
    ("fusion layer 融合层", ["shared representation space"]),
    ("", ["cross-modal attention"]),
    ("application layer 应用层", ["multimodal understanding", "cross-modal retrieval", "multimodal generation"]),
]

#: Fig.2's arrows, ``(from, to)``: each modality has its own encoder and features; all three features meet in the
#: shared space, which feeds cross-modal attention, which feeds the three applications.
REPRESENTATION_EDGES: list[tuple[str, str]] = [
    *[(f"{m} data", f"{e} encoder") for m, e in (("text", "text"), ("image", "vision"), ("audio", "audio"))],
    *[(f"{e} encoder", f"{f} features") for e, f in (("text", "text"), ("vision", "visual"), ("audio", "audio"))],
    *[(f"{f} features", "shared representation space") for f in ("text", "visual", "audio")],
    ("shared representation space", "cross-modal attention"),
    *[("cross-modal attention", app) for app in
      ("multimodal understanding", "cross-modal retrieval", "multimodal generation")],
]

#: §3.1, Fig.3 — a multimodal transformer (encoder-decoder with cross-modal attention), bottom to top.
TRANSFORMER_LAYERS: list[tuple[str, list[str]]] = [
    ("inputs", ["image patches", "text tokens"]),
    ("embeddings", ["patch embedding + position", "token embedding + position"]),
    ("unimodal encoders", ["vision self-attention × N", "text self-attention × N"]),
    ("fusion", ["cross-modal attention (Q: text, K/V: image)"]),
    ("decoder", ["causal self-attention + cross-attention"]),
    ("heads", ["ITC", "ITM", "MLM", "captioning / VQA"]),
]

#: §5.1, Fig.4 — the retrieval system, as a flow of steps with the query-type branch.
RETRIEVAL_FLOW: list[tuple[str, list[str]]] = [
    ("user interaction 用户交互层", ["user query", "query type?"]),
    ("encoding", ["text encoder (text query)", "image encoder (image query)"]),
    ("feature matching 特征匹配层", ["query feature vector", "similarity to database vectors"]),
    ("results 结果展示层", ["rank results", "return matches"]),
]

#: §7.1, Fig.5 — predicted distribution of future trends (percent, as in the article).
TRENDS: list[tuple[str, str, int]] = [
    ("larger models", "更大规模的模型", 35),
    ("finer-grained modality understanding", "更细粒度的模态理解", 25),
    ("real-time multimodal interaction", "实时多模态交互", 20),
    ("low-resource adaptation", "低资源场景适配", 15),
    ("domain-specific optimisation", "领域特化优化", 5),
]

#: §7.2 — emerging applications.
APPLICATIONS: list[tuple[str, str]] = [
    ("smart healthcare 智能医疗", "medical images + electronic health records"),
    ("autonomous driving 自动驾驶", "camera + radar + lidar fusion"),
    ("augmented reality 增强现实", "real world + virtual information"),
    ("education technology 教育科技", "personalised, multi-sensory learning"),
]

#: §8.1 — model choice by scale.
MODEL_SCALES: list[tuple[str, list[str]]] = [
    ("small-scale 小规模", ["MobileCLIP"]),
    ("medium-scale 中等规模", ["ViLT", "CLIP"]),
    ("large-scale 大规模", ["GPT-4V", "Flamingo"]),
]

#: The article's references (参考链接).
REFERENCES: list[str] = [
    "CLIP: Connecting Text and Images",
    "DALL-E 2: Creating Images from Text",
    "Vision-Language Models: A Survey and Taxonomy",
    "Multimodal Machine Learning: A Survey and Taxonomy",
    "Transformer in Vision: A Survey",
]
