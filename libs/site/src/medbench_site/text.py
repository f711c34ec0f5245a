"""The website's words, Chinese first and English second."""

from __future__ import annotations

LANGS = ("zh", "en")
LANG_NAMES = {"zh": "中文", "en": "English"}

TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "site": "MedBench 医疗大模型评测",
        "skip": "跳到正文",
        "home": "首页",
        "methods": "评测方法",
        "track.llm": "大语言模型",
        "track.multimodal": "多模态大模型",
        "track.agent": "智能体",
        "board.api": "评测榜单（API 提交）",
        "board.upload": "自测榜单（答案上传）",
        "boards.note": "两个榜单所用的评测数据并不相同，分数不可直接比较。",
        "cycle": "评测周期",
        "cycles": "评测周期",
        "history": "历史",
        "history.title": "历史成绩",
        "history.note": "每个模型在各评测周期的综合得分（95% 区间）；括号外为等值后分数（如有）。",
        "latest": "最新",
        "no_cycle": "未分周期",
        "pages": "分页",
        "empty": "本榜单暂无公开结果。",
        "rank": "排名",
        "group": "组",
        "model": "模型",
        "organisation": "机构",
        "source": "开源/闭源",
        "open": "开源",
        "closed": "闭源",
        "params": "参数量",
        "released": "发布日期",
        "overall": "综合得分",
        "interval": "95% 区间",
        "equated": "等值分数",
        "dimensions": "能力维度",
        "dimension": "维度",
        "dataset": "数据集",
        "metric": "评测指标",
        "items": "题目数",
        "units": "计分单元",
        "rule": "计分规则",
        "score": "得分",
        "entries": "条公开结果",
        "top": "第一名",
        "groups.note": (
            "排名 = 1 + 区间完全高于本模型区间的模型数。同组模型的 95% 区间相互重叠，"
            "其先后顺序没有统计意义。"
        ),
        "submission": "提交",
        "radar": "各能力维度得分雷达图",
        "radar.desc": "各维度得分（0-100）",
        "per_dataset": "各数据集得分",
        "per_dimension": "各维度得分",
        "lineage": "溯源信息",
        "lineage.note": "以下信息可用于复核本报告：同一题池、同一评分版本下可重现相同分数。",
        "pool_id": "题池",
        "scorer_version": "评分器版本",
        "aggregator_version": "汇总器版本",
        "item_scores_digest": "逐题得分摘要（HMAC-SHA-256，平台密钥）",
        "judge_models": "裁判模型",
        "rubric_versions": "评分细则版本",
        "calibration_ids": "裁判校准编号",
        "endpoint_model": "接口模型名",
        "decoding": "解码设置",
        "published_at": "公开时间",
        "scored_items": "已评分题目",
        "board_of": "所在榜单",
        "generated": "页面生成时间",
        "registry": "数据集登记版本",
        "none": "无",
        "on_board": "在榜单上的位置",
        "footer": "只显示提交方选择公开的结果；题目与参考答案从不公开。",
        "table.scroll": "可横向滚动的表格",
        "partial": "不完整",
        "partial.dimensions": "不完整：覆盖 {have}/{all} 个维度",
        "partial.datasets": "不完整：缺少 {n} 个数据集",
        "partial.note": (
            "标为“不完整”的结果缺少本赛道的部分维度或数据集（没有任何已评分题目）：其综合得分只是"
            "已有维度的平均，不能与完整结果比较，因此列在所有完整结果之后，不参与排名。"
        ),
        "partial.report": (
            "本报告不完整：综合得分只是已有 {have} 个维度的平均，不能与完整报告比较，也不参与排名。"
        ),
        "missing_dimensions": "缺少的维度",
        "missing_datasets": "缺少的数据集",
        "unranked": "不参与排名（不完整）",
    },
    "en": {
        "site": "MedBench: evaluating medical AI",
        "skip": "Skip to content",
        "home": "Home",
        "methods": "Methods",
        "track.llm": "Large language models",
        "track.multimodal": "Multimodal models",
        "track.agent": "Agents",
        "board.api": "Evaluation board (API submissions)",
        "board.upload": "Self-test board (uploaded answers)",
        "boards.note": (
            "The two boards use different evaluation data: their scores are not comparable."
        ),
        "cycle": "Cycle",
        "cycles": "Cycles",
        "history": "History",
        "history.title": "History",
        "history.note": (
            "Each model's overall score (95% interval) per cycle; the equated score follows where "
            "equating has run."
        ),
        "latest": "latest",
        "no_cycle": "no cycle",
        "pages": "Pages",
        "empty": "No published results on this board yet.",
        "rank": "Rank",
        "group": "Group",
        "model": "Model",
        "organisation": "Organisation",
        "source": "Open/closed",
        "open": "open",
        "closed": "closed",
        "params": "Parameters",
        "released": "Released",
        "overall": "Overall",
        "interval": "95% interval",
        "equated": "Equated",
        "dimensions": "Dimensions",
        "dimension": "Dimension",
        "dataset": "Dataset",
        "metric": "Metric",
        "items": "Items",
        "units": "Units",
        "rule": "Rule",
        "score": "Score",
        "entries": "published results",
        "top": "Top",
        "groups.note": (
            "Rank = 1 + the number of models whose interval lies entirely above this one's. "
            "Models in one group have overlapping 95% intervals: their order is not significant."
        ),
        "submission": "Submission",
        "radar": "Radar chart of the dimension scores",
        "radar.desc": "Dimension scores (0-100)",
        "per_dataset": "Scores per dataset",
        "per_dimension": "Scores per dimension",
        "lineage": "Lineage",
        "lineage.note": (
            "What this report was computed from: the same pool and scorer versions give the same "
            "scores again."
        ),
        "pool_id": "Pool",
        "scorer_version": "Scorer version",
        "aggregator_version": "Aggregator version",
        "item_scores_digest": "Item scores digest (HMAC-SHA-256, platform key)",
        "judge_models": "Judge models",
        "rubric_versions": "Rubric versions",
        "calibration_ids": "Judge calibrations",
        "endpoint_model": "Endpoint model",
        "decoding": "Decoding settings",
        "published_at": "Published",
        "scored_items": "Items scored",
        "board_of": "Board",
        "generated": "Generated",
        "registry": "Dataset registry",
        "none": "none",
        "on_board": "On its board",
        "footer": (
            "Only results their submitters chose to publish appear here; items and reference "
            "answers are never published."
        ),
        "table.scroll": "Table, scrolls sideways",
        "partial": "partial",
        "partial.dimensions": "partial: {have} of {all} dimensions",
        "partial.datasets": "partial: {n} datasets missing",
        "partial.note": (
            "Entries marked partial miss some dimensions or datasets of the track (no scored "
            "item): their overall averages only the dimensions they have and compares with no "
            "complete entry, so they are listed after every complete entry, without a rank."
        ),
        "partial.report": (
            "This report is partial: its overall is the mean of the {have} dimensions it has, "
            "not comparable with a complete report's, and it is not ranked."
        ),
        "missing_dimensions": "Missing dimensions",
        "missing_datasets": "Missing datasets",
        "unranked": "not ranked (partial)",
    },
}

METHODS: dict[str, list[tuple[str, list[str]]]] = {
    "zh": [
        (
            "题池与轮换",
            [
                "每个评测周期从题库中分层抽取一个新的隐藏题池；相邻周期共享少量锚题，用于跨周期等值。"
                "题目与参考答案只保存在评分服务中，从不发送给被评测方。",
                "题池使用期间，提交方只能看到各数据集、各维度的得分及其区间，看不到逐题结果"
                "（逐题得分会泄露答案）；题池轮换下线并由维护者公开后，提交方才能查看自己的逐题结果，"
                "该题池的题目也永不再进入任何题池。本网站只展示汇总分数，从不展示逐题结果。",
                "每个下载者看到的选择题选项顺序不同，其中少量题目按下载者作了改动（探针题），"
                "照常计分，用于追踪泄露。",
            ],
        ),
        (
            "两个榜单",
            [
                "评测榜单：平台按固定解码设置（temperature 0.7，max_tokens 512，上下文 2048）"
                "调用提交方的 API。自测榜单：提交方下载题目、上传答案。两者数据不同，分开排名。",
            ],
        ),
        (
            "计分",
            [
                "客观题按数据集规定的指标计分（准确率、F1、关键点召回率等）；开放题由经医生评分校准的"
                "裁判模型按版本化评分细则打分，部分数据集两者合并。",
                "数据集得分 = 计分单元得分的平均（0-100）；维度得分 = 所含数据集得分的简单平均；"
                "综合得分 = 各维度得分的简单平均。",
                "报告应覆盖本赛道（按题池记录的数据集登记版本）的全部数据集。若某数据集没有任何已评分"
                "题目（题池中没有它的题，或其题目全部无法评分），报告标为“不完整”并列出缺少的维度与"
                "数据集；各分数仍按已有部分计算，综合得分是已有维度的平均。不完整结果在榜单上排在"
                "所有完整结果之后，不参与排名。",
            ],
        ),
        (
            "裁判校准",
            [
                "裁判模型与评分细则的每个版本都要与医生评分比对：二次加权 Cohen's kappa ≥ 0.80 才能"
                "用于正式评测；分歧大的题目交由医生复核，复核结果再用于校准。",
                "试图操纵裁判的答案（如“请给满分”）会被标记，其得分被限制在量表最低的四分之一。",
            ],
        ),
        (
            "区间与排名组",
            [
                "每个分数都附 95% 自助法区间：在每个数据集内对计分单元重抽样 1,000 次；"
                "多个裁判打分时，每次重抽样也随机选择一位裁判的分数。",
                "排名 = 1 + 区间完全高于本模型区间的模型数；区间重叠的模型同名次、同组。",
            ],
        ),
        (
            "跨周期等值",
            [
                "对一个榜单所有公开结果做联合 Rasch 模型拟合，以锚题连接各周期题池的难度，"
                "等值分数是模型在参考题池上的期望得分（0-100），可跨周期比较。",
            ],
        ),
        (
            "公开与可复核",
            [
                "只有提交方选择公开的结果才会出现在本网站；撤回后即从榜单消失。每份报告附溯源信息："
                "题池、评分器与汇总器版本、裁判模型、评分细则版本、校准编号和逐题得分摘要。",
            ],
        ),
    ],
    "en": [
        (
            "Pools and rotation",
            [
                "Each cycle draws a new hidden pool from the task bank by stratified sampling; "
                "consecutive pools share a few anchor items, which link their scales. Items and "
                "reference answers stay inside the scorers and are never sent to a submitter.",
                "While a pool is in use, submitters see scores per dataset and per dimension with "
                "their intervals, never per item (per-item scores would reveal its answers); once "
                "the pool has been rotated out and the maintainers disclose it, each submitter "
                "may read its own per-item results, and the pool's questions never serve again. "
                "This site shows aggregate scores only, never per-item results.",
                "Each download shows multiple-choice options in its own order, and a few of its "
                "items altered for its downloader (canaries, scored like the rest), so a leaked "
                "copy can be traced.",
            ],
        ),
        (
            "Two boards",
            [
                "Evaluation board: the platform calls the submitter's API under fixed decoding "
                "settings (temperature 0.7, max_tokens 512, context 2,048). Self-test board: the "
                "submitter downloads the prompts and uploads answers. The data differ, so the "
                "boards are ranked apart.",
            ],
        ),
        (
            "Scoring",
            [
                "Objective items are scored by their dataset's metric (accuracy, F1, key-point "
                "recall ...); open answers by a judge model calibrated against physicians, under "
                "versioned rubrics; some datasets combine both.",
                "Dataset score = mean over its scoring units (0-100); dimension score = unweighted "
                "mean of its datasets; overall = unweighted mean of the dimensions.",
                "A report must cover every dataset of its track (in the registry version its pool "
                "records). When a dataset has no scored item (the pool held none of its items, or "
                "none could be scored), the report is marked partial and lists the missing "
                "dimensions and datasets; its scores are still those of what it has, its overall "
                "the mean of the dimensions present. On a board, partial entries come after every "
                "complete entry and are not ranked.",
            ],
        ),
        (
            "Judge calibration",
            [
                "Every judge and rubric version is compared with physicians' ratings: only a "
                "quadratic-weighted Cohen's kappa of at least 0.80 admits it to official runs. "
                "Items the judges disagree on go to physician review, whose ratings join the "
                "calibration data.",
                'Answers that try to steer the judge ("give full marks") are flagged and capped '
                "at the bottom quarter of the scale.",
            ],
        ),
        (
            "Intervals and rank groups",
            [
                "Every score carries a 95% bootstrap interval: scoring units resampled within "
                "each dataset, 1,000 times; where a judge panel scored an item, each resample also "
                "draws one judge's score.",
                "Rank = 1 + the number of models whose interval lies entirely above this one's; "
                "models whose intervals overlap share a rank and a group.",
            ],
        ),
        (
            "Equating across cycles",
            [
                "A joint Rasch fit over every published result of a board, with anchor items "
                "linking the pools' difficulties; the equated score is the expected 0-100 score "
                "on a reference pool, comparable across cycles.",
            ],
        ),
        (
            "Publication and lineage",
            [
                "Only results their submitters chose to publish appear here, and a withdrawn "
                "result leaves the board. Every report names its lineage: pool, scorer and "
                "aggregator versions, judge models, rubric versions, calibrations and a digest "
                "of the item scores.",
            ],
        ),
    ],
}
