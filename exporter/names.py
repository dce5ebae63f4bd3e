"""C++ names: keywords, and stable identifiers made from source names."""
from __future__ import annotations

import re

CXX_KEYWORDS = frozenset("""alignas alignof and and_eq asm auto bitand bitor bool break case catch
char char8_t char16_t char32_t class compl concept const consteval constexpr constinit const_cast
continue co_await co_return co_yield decltype default delete do double dynamic_cast else enum
explicit export extern false float for friend goto if import inline int long module mutable
namespace new noexcept not not_eq nullptr operator or or_eq private protected public register
reinterpret_cast requires return short signed sizeof static static_assert static_cast struct
switch template this thread_local throw true try typedef typeid typename union unsigned using
virtual void volatile wchar_t while xor xor_eq""".split())


def c_identifier(text: str, prefix: str = "v") -> str:
    """A stable C++ identifier made from a source name ("layer1.0.conv1.weight" -> layer1_0_conv1_weight)."""
    ident = re.sub(r"[^0-9A-Za-z_]", "_", text).strip("_")
    ident = re.sub(r"_+", "_", ident)
    if not ident or ident[0].isdigit() or ident in CXX_KEYWORDS:
        ident = f"{prefix}_{ident}"
    return ident
