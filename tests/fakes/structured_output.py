"""How real OpenAI-compatible servers refuse a structured-output mode: the status and the error body each
answers, as their code and their users' reports show them, for the loopback server to send
(`ServerState.refuses_format`: a server's name below).

- llama-cpp-python (`python -m llama_cpp.server`): its request model takes response_format type 'text' or
  'json_object' only; the pydantic error reaches the client as a 500 with the validation message.
- llama.cpp's llama-server (builds before json_schema support): a 500, 'response_format type must be one of
  "text" or "json_object", but got: json_schema'.
- LM Studio: json_object is refused with a 400, "'response_format.type' must be 'json_schema' or 'text'".
- Ollama: a schema its grammar converter cannot take is a 500, "invalid JSON schema in format".
- vLLM: a schema xgrammar cannot take is a 400, "The provided JSON schema contains features not supported by
  xgrammar." (a BadRequestError in vLLM's error shape).
"""

from __future__ import annotations

LLAMA_CPP_PYTHON_MESSAGE = (
    "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or "
    "'json_object'\", 'input': 'json_schema', 'ctx': {'expected': \"'text' or 'json_object'\"}}]")

# server -> {refused mode -> (status, error body)}
REFUSALS: dict[str, dict[str, tuple[int, dict]]] = {
    "llama-cpp-python": {"json_schema": (500, {"error": {"message": LLAMA_CPP_PYTHON_MESSAGE,
                                                         "type": "internal_server_error", "param": None,
                                                         "code": None}})},
    "llama-server": {"json_schema": (500, {"error": {
        "code": 500, "type": "server_error",
        "message": 'response_format type must be one of "text" or "json_object", but got: json_schema'}})},
    "lmstudio": {"json_object": (400, {"error": "'response_format.type' must be 'json_schema' or 'text'"})},
    "ollama": {"json_schema": (500, {"error": {"message": "invalid JSON schema in format", "type": "api_error",
                                               "param": None, "code": None}})},
    "vllm": {"json_schema": (400, {"object": "error", "type": "BadRequestError", "param": None, "code": 400,
                                   "message": "The provided JSON schema contains features not supported by "
                                              "xgrammar."})},
}


def refusal(server: str, request: dict) -> tuple[int, dict] | None:
    """The status and body `server` answers this request with when it refuses its response_format, else None."""
    mode = request.get("response_format", {}).get("type", "none")
    return REFUSALS[server].get(mode)
