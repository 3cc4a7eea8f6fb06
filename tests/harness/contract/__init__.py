"""Tests of contract validation (`shiptwo pv validate`), the YAML reader and the rule catalog."""
