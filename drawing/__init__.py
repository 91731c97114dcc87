"""Image drawing shared by the MCA Grid node and the evaluation harness (plain Pillow)."""
