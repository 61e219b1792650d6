"""Load generation: in-process (``inprocess``) and through Triton (``served``),
sharing one measurement loop (``measure``) and one result schema."""
