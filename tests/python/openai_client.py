#!/usr/bin/env python3
"""The official `openai` client against OpenLoRA: lists the models, asks a fine-tune (whole
and streamed), and gets the client's own exceptions for bad requests.

Usage: python tests/python/openai_client.py BASE_URL ADAPTER BASE_MODEL
Prints one JSON line with what it saw; exits non-zero on any mismatch.
"""

import json
import sys

import openai


def main():
    base_url, adapter, base = sys.argv[1:4]
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)
    ids = sorted(m.id for m in client.models.list())
    assert adapter in ids and base in ids, ids

    messages = [{"role": "user", "content": "What is the capital city of the island nation of Zorbia?"}]
    whole = client.chat.completions.create(model=adapter, messages=messages, max_tokens=12, temperature=0)
    answer = whole.choices[0].message.content
    assert whole.usage.completion_tokens > 0, whole

    pieces = []
    finish = None
    usage = None
    stream = client.chat.completions.create(
        model=adapter, messages=messages, max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    assert "".join(pieces) == answer, (pieces, answer)
    assert finish in ("stop", "length"), finish
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens, usage

    text = client.completions.create(model=base, prompt="The", max_tokens=4, temperature=0)
    assert text.choices[0].text is not None

    try:
        client.chat.completions.create(model="no-such-adapter", messages=messages)
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as e:
        assert e.code == "model_not_found", e
    try:
        client.chat.completions.create(model=base, messages=messages, max_tokens=10**7)
        raise AssertionError("an absurd max_tokens was accepted")
    except openai.BadRequestError as e:
        assert "max_tokens" in str(e), e

    print(json.dumps({"models": ids, "answer": answer, "streamed_pieces": len(pieces), "client": openai.__version__}))


if __name__ == "__main__":
    main()
