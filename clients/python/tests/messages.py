"""Messages of every LangChain type, with every field set."""

from __future__ import annotations

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
)


def every_message_type() -> list[BaseMessage]:
    return [
        HumanMessage(
            "Where is order 8892? ünïcødé 🚚",
            id="msg-h1",
            name="alice",
            additional_kwargs={"locale": "de-DE"},
            response_metadata={"channel": "web"},
        ),
        HumanMessage(
            content=[
                "a bare string block",
                {"type": "text", "text": "and a text block"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
            ],
            id="msg-h2",
        ),
        SystemMessage("You are a support bot.", id="msg-s1", name="policy"),
        AIMessage(
            content="",
            id="msg-a1",
            name="support-bot",
            tool_calls=[
                {"name": "lookup_order", "args": {"order": "8892", "verbose": True}, "id": "call-1"},
                {"name": "notify", "args": {"ids": [1, 2, 3]}, "id": "call-2"},
            ],
            invalid_tool_calls=[
                {"name": "broken", "args": "{not json", "id": "call-3", "error": "bad json"}
            ],
            usage_metadata={
                "input_tokens": 120,
                "output_tokens": 30,
                "total_tokens": 150,
                "input_token_details": {"cache_read": 100},
                "output_token_details": {"reasoning": 12},
            },
            response_metadata={"model_name": "gpt-x", "finish_reason": "tool_calls", "logprobs": None},
            additional_kwargs={"refusal": None, "provider": {"seed": 42, "temperature": 0.7}},
        ),
        ToolMessage(
            "order 8892 shipped",
            tool_call_id="call-1",
            name="lookup_order",
            id="msg-t1",
            status="success",
            artifact={"rows": [{"id": 8892, "state": "shipped"}]},
        ),
        ToolMessage(
            content=[{"type": "text", "text": "failed"}],
            tool_call_id="call-2",
            status="error",
            id="msg-t2",
        ),
        AIMessage(
            content=[{"type": "text", "text": "It shipped."}, " Anything else?"],
            id="msg-a2",
            response_metadata={"model_name": "gpt-x"},
        ),
        AIMessageChunk(
            content="Streaming chunk",
            id="msg-c1",
            tool_call_chunks=[{"name": "lookup_order", "args": '{"order": "88', "id": "call-4", "index": 0}],
            usage_metadata={"input_tokens": 5, "output_tokens": 1, "total_tokens": 6},
            response_metadata={"model_provider": "fake"},
        ),
        AIMessageChunk(content="last chunk", id="msg-c2", chunk_position="last"),
        HumanMessageChunk(content="human chunk", id="msg-hc"),
        SystemMessageChunk(content="system chunk"),
        ToolMessageChunk(content="tool chunk", tool_call_id="call-5"),
        FunctionMessage(name="legacy_fn", content='{"ok": true}', id="msg-f1"),
        FunctionMessageChunk(name="legacy_fn", content="chunk"),
        ChatMessage(role="critic", content="Too verbose.", id="msg-x1"),
        ChatMessageChunk(role="narrator", content="Meanwhile..."),
        AIMessage(""),
    ]
