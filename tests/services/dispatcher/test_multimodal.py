"""Images as OpenAI content parts, within size and type limits."""

from __future__ import annotations

import base64

import pytest

from dispatcher.core.multimodal import (
    Image,
    ImageNotSendable,
    chat_messages,
    check_images,
    data_url,
)

PNG = Image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "image/png")


def test_text_only_messages_stay_plain_strings() -> None:
    messages = [("system", "你是医生"), ("user", "头痛怎么办？")]
    assert chat_messages(messages, []) == [
        {"role": "system", "content": "你是医生"},
        {"role": "user", "content": "头痛怎么办？"},
    ]


def test_images_join_the_last_user_message_after_its_text_in_order() -> None:
    other = Image(b"\xff\xd8\xff" + b"\x01" * 10, "image/jpeg")
    messages = [("user", "第一张"), ("assistant", "好的"), ("user", "这两张片子有什么异常？")]
    out = chat_messages(messages, [PNG, other])
    assert out[0] == {"role": "user", "content": "第一张"}
    parts = out[2]["content"]
    assert parts[0] == {"type": "text", "text": "这两张片子有什么异常？"}
    urls = [p["image_url"]["url"] for p in parts[1:]]
    assert urls == [data_url(PNG), data_url(other)]
    assert urls[1].startswith("data:image/jpeg;base64,")
    assert base64.b64decode(urls[0].split(",", 1)[1]) == PNG.content


def test_an_image_over_the_limit_is_refused_with_its_size() -> None:
    with pytest.raises(ImageNotSendable, match="image 1 has 30 bytes; the limit is 29"):
        check_images([PNG, Image(b"x" * 30, "image/png")], max_image_bytes=29)


def test_the_request_total_is_limited_too() -> None:
    check_images([PNG, PNG], max_image_bytes=100, max_request_bytes=56)
    with pytest.raises(ImageNotSendable, match="3 images have 84 bytes"):
        check_images([PNG, PNG, PNG], max_image_bytes=100, max_request_bytes=56)


@pytest.mark.parametrize("media_type", ["application/dicom", "", "image/tiff"])
def test_types_endpoints_do_not_take_are_refused(media_type: str) -> None:
    with pytest.raises(ImageNotSendable, match="endpoints take image/gif"):
        check_images([Image(b"abc", media_type)])
