"""What STAS Model Patch (Ray) sends to raylight's workers: stdlib only, pickled by value, so it
unpickles on a worker that has not imported this pack (raylight issue #55); there it imports the
pack from its folder under the name ComfyUI gave it, then patches the worker's model."""


def apply_on_worker(model, pack_dir, pack_name, settings):
    import importlib
    import importlib.util
    import os
    import sys

    if pack_name not in sys.modules:
        # the driver's folder, else the worker's own ComfyUI (a remote Ray node runs from its ComfyUI root)
        found = [d for d in (pack_dir, os.path.join(os.getcwd(), "custom_nodes", os.path.basename(pack_dir)))
                 if os.path.isfile(os.path.join(d, "__init__.py"))]
        if not found:
            raise ValueError(f"STAS Model Patch: this Ray worker has no comfyui-stas (looked in {pack_dir} and "
                             f"{os.path.join(os.getcwd(), 'custom_nodes')}). Install comfyui-stas on every machine "
                             "of the Ray cluster, in ComfyUI's custom_nodes folder.")
        spec = importlib.util.spec_from_file_location(pack_name, os.path.join(found[0], "__init__.py"),
                                                      submodule_search_locations=[found[0]])
        module = importlib.util.module_from_spec(spec)
        sys.modules[pack_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[pack_name]
            raise
    return importlib.import_module(pack_name + ".nodes.ray_patch").patch_on_worker(model, settings)


def restore_on_worker(model, pack_name):
    """The worker's model as it was before apply_on_worker (itself if the pack never patched it here)."""
    import sys

    ray_patch = sys.modules.get(pack_name + ".nodes.ray_patch")
    return ray_patch.unpatch_on_worker(model) if ray_patch is not None else model
