"""JSON schemas that exercise structured output: shared by the constrained-decoding tests and the grammar-library
benchmark (nested objects, arrays, enums, required/optional, patterns, number bounds, refs, open objects, string
formats, oneOf; `uniqueItems` is one that llguidance refuses rather than enforce)."""

SCHEMAS = {
    "nested objects": {
        "type": "object", "additionalProperties": False, "required": ["name", "address"],
        "properties": {"name": {"type": "string", "maxLength": 12},
                       "address": {"type": "object", "additionalProperties": False, "required": ["city", "zip"],
                                   "properties": {"city": {"type": "string"}, "zip": {"type": "string"}}}}},
    "arrays": {
        "type": "object", "additionalProperties": False, "required": ["boxes"],
        "properties": {"boxes": {"type": "array", "minItems": 1, "maxItems": 3,
                                 "items": {"type": "array", "minItems": 4, "maxItems": 4,
                                           "items": {"type": "integer", "minimum": 0, "maximum": 1000}}}}},
    "enum and const": {
        "type": "object", "additionalProperties": False, "required": ["color", "kind"],
        "properties": {"color": {"enum": ["red", "green", "blue", 7, None]}, "kind": {"const": "box"}}},
    "required, optional": {
        "type": "object", "additionalProperties": False, "required": ["a"],
        "properties": {"a": {"type": "boolean"}, "b": {"type": "integer"}, "c": {"type": "string", "maxLength": 5}}},
    "pattern": {
        "type": "object", "additionalProperties": False, "required": ["code", "zip"],
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
                       "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}},
    "number bounds": {
        "type": "object", "additionalProperties": False, "required": ["count", "score", "temp"],
        "properties": {"count": {"type": "integer", "minimum": 1, "maximum": 12},
                       "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                       "temp": {"type": "number", "minimum": -40.5, "maximum": 60}}},
    "$ref, anyOf (pydantic)": {
        "$defs": {"Item": {"type": "object", "additionalProperties": False, "required": ["label", "n"],
                           "properties": {"label": {"type": "string", "minLength": 1, "maxLength": 8},
                                          "n": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}}},
        "type": "object", "additionalProperties": False, "required": ["items"],
        "properties": {"items": {"type": "array", "maxItems": 3, "items": {"$ref": "#/$defs/Item"}}}},
    "open object": {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}},
    "string lengths, format": {
        "type": "object", "additionalProperties": False, "required": ["word", "day"],
        "properties": {"word": {"type": "string", "minLength": 3, "maxLength": 6},
                       "day": {"type": "string", "format": "date"}}},
    "oneOf, multipleOf": {
        "type": "object", "additionalProperties": False, "required": ["v", "m"],
        "properties": {"v": {"oneOf": [{"type": "integer", "minimum": 10}, {"type": "string", "maxLength": 3}]},
                       "m": {"type": "integer", "multipleOf": 5, "minimum": 0, "maximum": 100}}},
    "uniqueItems": {
        "type": "array", "uniqueItems": True, "minItems": 2, "maxItems": 3,
        "items": {"type": "integer", "minimum": 0, "maximum": 3}},
}

# What glmv enforces (llguidance refuses uniqueItems instead of ignoring it).
ENFORCED = {name: schema for name, schema in SCHEMAS.items() if name != "uniqueItems"}
