"""Every word the review app shows, Chinese first, English second."""

from __future__ import annotations

LANGS = ("zh", "en")
HTML_LANG = {"zh": "zh-CN", "en": "en"}

T: dict[str, tuple[str, str]] = {
    "app": ("MedBench 医师评审", "MedBench physician review"),
    "skip": ("跳到主要内容", "Skip to main content"),
    "other_lang": ("English", "中文"),
    "other_lang_label": ("Switch to English", "切换到中文"),
    "nav": ("主导航", "Main navigation"),
    "queue": ("评审队列", "Review queue"),
    "import": ("导入评分", "Import ratings"),
    "calibration": ("校准报告", "Calibration reports"),
    "signout": ("退出", "Sign out"),
    "signed_in_as": ("评审员编号", "Reviewer id"),
    "signin": ("登录", "Sign in"),
    "signin_intro": (
        "请输入评审员 API 密钥（由平台维护者发放）。"
        "密钥只保存在本次会话中，不会出现在网址或页面里。",
        "Enter your reviewer API key (issued by a platform maintainer). The key is kept for this "
        "session only, never in a URL or a page.",
    ),
    "api_key": ("API 密钥", "API key"),
    "open_reviews": ("待评审条目", "Open reviews"),
    "open_count": ("当前共有 {n} 条待评审。", "{n} reviews are open."),
    "none_open": ("目前没有待评审的条目。", "No review is open right now."),
    "claim_next": ("领取下一条", "Claim the next review"),
    "my_claims": ("我已领取的条目", "Reviews I hold"),
    "continue": ("继续评审", "Continue"),
    "lease_until": ("租约截止（UTC）", "Lease ends (UTC)"),
    "review": ("评审", "Review"),
    "blind_note": (
        "盲评：不显示提交机构、模型和评审模型的打分。",
        "Blind review: the submitting institution, the model and the judges' scores are not shown.",
    ),
    "dataset": ("数据集", "Dataset"),
    "dimension": ("能力维度", "Dimension"),
    "rubric": ("评分标准", "Rubric"),
    "question": ("问题", "Question"),
    "images": ("题目图像", "Images of the item"),
    "image_alt": (
        "题目图像 {n}/{total}（编号 {id}）",
        "Image {n} of {total} of the item (id {id})",
    ),
    "image_open": ("打开原图 {n}（新窗口）", "Open image {n} full size (new window)"),
    "reference": ("参考答案", "Reference answer"),
    "key_points": ("得分要点", "Key points"),
    "answer": ("待评回答", "Answer to rate"),
    "instructions": ("评分说明", "Instructions"),
    "anchors": ("量表锚点", "Scale anchors"),
    "criteria": ("分项评分", "Scores per criterion"),
    "weight": ("权重", "weight"),
    "overall": ("总分", "Overall score"),
    "overall_hint": (
        "总分用于校准评审模型：按权重综合各分项，并遵守评分说明中的上限规则。",
        "The overall score calibrates the judge: combine the criteria by weight and apply the "
        "instructions' caps.",
    ),
    "submit": ("提交评分", "Submit rating"),
    "submitted": ("评分已提交", "Rating submitted"),
    "submitted_body": (
        "谢谢！评分已记录，并加入校准数据。",
        "Thank you: the rating is recorded and joins the calibration ratings.",
    ),
    "back_queue": ("返回评审队列", "Back to the queue"),
    "missing_score": ("请为每一项选择分数：{names}", "Choose a score for every item: {names}"),
    "import_intro": (
        "上传 CSV 或 JSONL 文件（UTF-8），每行一条医师评分。列说明见下表。",
        "Upload a CSV or JSONL file (UTF-8), one physician rating per row. The columns are below.",
    ),
    "file": ("评分文件（.csv 或 .jsonl）", "Ratings file (.csv or .jsonl)"),
    "upload": ("上传并导入", "Upload and import"),
    "columns": ("文件列", "File columns"),
    "column": ("列", "Column"),
    "meaning": ("含义", "Meaning"),
    "imported": ("新导入 {n} 条", "{n} imported"),
    "replaced": ("替换 {n} 条", "{n} replaced"),
    "rejected": ("被拒绝的评分", "Rejected ratings"),
    "unreadable": ("无法读取的行", "Rows that could not be read"),
    "row": ("行", "Row"),
    "field": ("字段", "Field"),
    "reason": ("原因", "Reason"),
    "import_done": ("导入结果", "Import result"),
    "then_measure": (
        "导入不会自动重新校准：在校准报告页点击“重新测量”。",
        "An import does not recalibrate by itself: use “Measure again” on the calibration page.",
    ),
    "rubric_id": ("评分标准编号", "Rubric id"),
    "version": ("版本（0 为最新）", "Version (0 = latest)"),
    "show": ("查看报告", "Show report"),
    "known_rubrics": ("评分标准", "Rubrics"),
    "measure": ("重新测量", "Measure again"),
    "no_calibration": ("尚无校准记录", "No calibration yet"),
    "gate": ("准入判定", "Gate"),
    "calibrated": ("已校准：可用于正式评分", "Calibrated: admitted for official scoring"),
    "not_calibrated": (
        "未校准：不可用于正式评分",
        "Not calibrated: not admitted for official scoring",
    ),
    "why": ("原因", "Why"),
    "judge": ("评审模型", "Judge"),
    "n": ("评分对数 n", "Ratings n"),
    "answers": ("已评回答数", "Rated answers"),
    "min_ratings": ("最少回答数", "Minimum answers"),
    "threshold": ("阈值", "Threshold"),
    "kappa_q": ("二次加权 kappa", "Quadratic kappa"),
    "kappa_u": ("非加权 kappa", "Unweighted kappa"),
    "interval": ("95% 区间", "95% interval"),
    "interval_method": ("区间方法", "Interval method"),
    "measured_at": ("测量时间（UTC）", "Measured (UTC)"),
    "judge_failures": ("评审失败数", "Judge failures"),
    "confusion": (
        "混淆矩阵（行：评审模型分数；列：医师分数）",
        "Confusion matrix (rows: judge score; columns: physician score)",
    ),
    "judge_score": ("模型分", "Judge"),
    "per_dimension": ("各维度一致性", "Agreement per dimension"),
    "passed": ("通过", "Passed"),
    "yes": ("是", "yes"),
    "no": ("否", "no"),
    "ceiling": ("医师间一致性（上限）", "Physician-physician ceiling"),
    "pairs": ("配对数", "Pairs"),
    "per_criterion": ("各评分维度一致性", "Agreement per criterion"),
    "per_criterion_note": (
        "医师与评审模型都逐项评分的回答上，每个评分维度的一致性（仅报告，不作为准入条件）。",
        "Over the answers both the physicians and the judge scored per criterion (reported, "
        "not gating).",
    ),
    "criterion": ("评分维度", "Criterion"),
    "per_criterion_absent": (
        "分项一致性：本次校准没有逐项评分的结果（在评审模型逐项评分之前测量），请重新测量。",
        "Agreement per criterion: this calibration has none (measured before the judge scored "
        "each criterion): measure again.",
    ),
    "error": ("出错了", "Something went wrong"),
    "error_401": (
        "密钥无效或已过期，请重新登录。",
        "The key is invalid or expired: sign in again.",
    ),
    "error_403": ("您的角色无权执行此操作。", "Your role may not do this."),
    "error_404": (
        "未找到（评审租约可能已过期，请重新领取）。",
        "Not found (a review lease may have expired: claim again).",
    ),
    "error_409": ("当前状态不允许此操作。", "The current state does not allow this."),
    "error_400": ("请求有误。", "The request is not valid."),
    "error_413": ("上传内容过大。", "The upload is too large."),
    "error_429": ("请求过多，请稍后再试。", "Too many requests: try again later."),
    "error_503": ("评审服务暂时不可用。", "The judge scorer is unavailable right now."),
    "error_502": ("评审服务返回了错误。", "The judge scorer answered with an error."),
    "detail": ("服务返回的信息", "What the service said"),
    "csrf": ("表单已过期，请重试。", "The form expired: try again."),
    "home": ("首页", "Home"),
}


def t(lang: str, key: str, **values: object) -> str:
    zh, en = T[key]
    text = en if lang == "en" else zh
    return text.format(**values) if values else text
