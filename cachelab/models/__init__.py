from .specs import Arguments, BlockOutput, ModelSpec, known_families, register_spec, spec_by_family, spec_for

__all__ = ["Arguments", "BlockOutput", "ModelSpec", "known_families", "register_spec", "spec_by_family", "spec_for"]
