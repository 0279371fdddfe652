#!/usr/bin/env python3
"""Writes src/builtin/table.rs: how every list field of the built-in kinds merges, read from
the Go types of Kubernetes: the struct tags of strategic merge patch (`patchStrategy`,
`patchMergeKey`) and the markers of server-side apply (`+listType`, `+listMapKey`, and the
`+default` of list-map keys).

    python3 scripts/gen-merge-keys.py K8S_API_DIR APIMACHINERY_DIR > src/builtin/table.rs
    rustfmt --edition 2024 src/builtin/table.rs

K8S_API_DIR is a checkout of k8s.io/api, APIMACHINERY_DIR one of k8s.io/apimachinery (the
versions of the Kubernetes release the development API server reports, v0.33).

Only the structs on a path from a kind to a list that is not atomic are written, and of them
only the fields on such a path: whatever the table does not name is atomic.
"""

import os
import re
import sys

# package key -> (directory under its root, apiVersion of its types)
API_PACKAGES = {
    "core_v1": ("core/v1", "v1"),
    "apps_v1": ("apps/v1", "apps/v1"),
    "batch_v1": ("batch/v1", "batch/v1"),
    "rbac_v1": ("rbac/v1", "rbac.authorization.k8s.io/v1"),
    "authorization_v1": ("authorization/v1", "authorization.k8s.io/v1"),
    "authentication_v1": ("authentication/v1", "authentication.k8s.io/v1"),
    "networking_v1": ("networking/v1", "networking.k8s.io/v1"),
    "policy_v1": ("policy/v1", "policy/v1"),
    "autoscaling_v1": ("autoscaling/v1", "autoscaling/v1"),
    "autoscaling_v2": ("autoscaling/v2", "autoscaling/v2"),
    "scheduling_v1": ("scheduling/v1", "scheduling.k8s.io/v1"),
    "coordination_v1": ("coordination/v1", "coordination.k8s.io/v1"),
    "discovery_v1": ("discovery/v1", "discovery.k8s.io/v1"),
    "storage_v1": ("storage/v1", "storage.k8s.io/v1"),
    "admissionregistration_v1": ("admissionregistration/v1", "admissionregistration.k8s.io/v1"),
}
MACHINERY_PACKAGES = {"meta_v1": "pkg/apis/meta/v1"}
IMPORT_PATHS = {f"k8s.io/api/{d}": k for k, (d, _) in API_PACKAGES.items()}
IMPORT_PATHS.update({f"k8s.io/apimachinery/{d}": k for k, d in MACHINERY_PACKAGES.items()})

FIELD = re.compile(r"^\s*(\w+\s+)?([^\s`]+)\s+`([^`]*)`")
TAG = re.compile(r'(\w+):"([^"]*)"')
MARKER = re.compile(r"^\s*//\s*\+(listType|listMapKey|default)=(.*?)\s*$")


def parse_package(root, key):
    """Structs of one package: name -> [(json name, Go type, tags, markers, imports)]."""
    structs = {}
    for name in sorted(os.listdir(root)):
        if not name.endswith(".go") or name.endswith("_test.go"):
            continue
        text = open(os.path.join(root, name)).read()
        imports = {}
        for alias, path in re.findall(r'^\s*(\w+)?\s*"(k8s\.io/[^"]+)"', text, re.M):
            imports[alias or path.rsplit("/", 1)[1]] = IMPORT_PATHS.get(path, path)
        lines = text.split("\n")
        i = 0
        while i < len(lines):
            m = re.match(r"^type (\w+) struct \{", lines[i])
            i += 1
            if not m:
                continue
            fields, markers = [], []
            while not lines[i].startswith("}"):
                line = lines[i]
                i += 1
                mk = MARKER.match(line)
                if mk:
                    markers.append((mk.group(1), mk.group(2)))
                    continue
                if line.strip().startswith("//") or not line.strip():
                    continue
                f = FIELD.match(line)
                if f:
                    tags = dict(TAG.findall(f.group(3)))
                    if "json" in tags:
                        fields.append((f.group(1), f.group(2), tags, markers, imports))
                markers = []
            structs[m.group(1)] = fields
    return structs


def list_types(tags, markers):
    """(strategic, apply, retainKeys) of a list field; a list type is ("atomic",),
    ("set",) or ("map", [keys])."""
    strategy = tags.get("patchStrategy", "").split(",")
    key = tags.get("patchMergeKey")
    if "merge" in strategy:
        strategic = ("map", [key]) if key else ("set",)
    else:
        strategic = ("atomic",)
    kinds = [v for k, v in markers if k == "listType"]
    if kinds:
        keys = [v for k, v in markers if k == "listMapKey"]
        apply = ("map", keys) if kinds[0] == "map" else (kinds[0],)
    else:
        # As kube-openapi's schemaconv reads a schema without x-kubernetes-list-type.
        apply = strategic
    return strategic, apply, "retainKeys" in strategy


def main():
    api_root, machinery_root = sys.argv[1], sys.argv[2]
    packages = {}
    for key, (d, _) in API_PACKAGES.items():
        packages[key] = parse_package(os.path.join(api_root, d), key)
    for key, d in MACHINERY_PACKAGES.items():
        packages[key] = parse_package(os.path.join(machinery_root, d), key)

    def target(pkg, go_type, imports):
        """The (package, struct) a field's items are, or None."""
        t = go_type.lstrip("*")
        if t.startswith("[]"):
            t = t[2:].lstrip("*")
        if t.startswith("map[") or t.startswith("[]"):
            return None
        if "." in t:
            alias, t = t.split(".", 1)
            pkg = imports.get(alias)
        if pkg in packages and t in packages[pkg]:
            return (pkg, t)
        return None

    def key_default(item, key):
        """The `+default` of a list-map key field of struct `item`, as JSON text."""
        if not item:
            return None
        for fname, go_type, tags, markers, _ in packages[item[0]][item[1]]:
            if tags["json"].split(",")[0] == key:
                for k, v in markers:
                    if k == "default" and v.startswith('"'):
                        return v
        return None

    # (pkg, struct) -> [(json name, target struct or None, list info or None)], inline
    # fields flattened into their struct.
    def fields_of(pkg, name):
        out = []
        for fname, go_type, tags, markers, imports in packages[pkg][name]:
            json_name, *opts = tags["json"].split(",")
            tgt = target(pkg, go_type, imports)
            if "inline" in opts:
                if tgt:
                    out.extend(fields_of(*tgt))
                continue
            if not json_name or json_name == "-":
                continue
            info = None
            if go_type.lstrip("*").startswith("[]") and go_type != "[]byte":
                strategic, apply, retain = list_types(tags, markers)
                info = (strategic, apply, retain, tgt)
            out.append((json_name, tgt, info))
        return out

    all_fields = {(p, s): fields_of(p, s) for p in packages for s in packages[p]}

    def merges(info):
        return info[0] != ("atomic",) or info[1] != ("atomic",)

    def keep(tgt, info):
        """Whether a field belongs in the table: a list that merges, or a struct that holds
        one (an atomic list is replaced whole, whatever its items hold)."""
        return merges(info) if info else tgt in relevant

    # Which structs lead to a list that merges: a fixed point.
    relevant = set()
    changed = True
    while changed:
        changed = False
        for st, fields in all_fields.items():
            if st not in relevant and any(keep(tgt, info) for _, tgt, info in fields):
                relevant.add(st)
                changed = True

    def lt(t, item):
        if t[0] == "atomic":
            return "Lt::Atomic"
        if t[0] == "set":
            return "Lt::Set"
        keys = []
        for k in t[1]:
            d = key_default(item, k)
            keys.append(f'k("{k}", {"Some(" + repr_str(d) + ")" if d else "None"})')
        return f"Lt::Map(&[{', '.join(keys)}])"

    def ty(tgt, here):
        if not tgt or tgt not in relevant:
            return "None"
        pkg, name = tgt
        return f"Some(&{name})" if pkg == here else f"Some(&super::{pkg}::{name})"

    emitted = {}
    for (pkg, name) in sorted(relevant):
        rows = []
        for json_name, tgt, info in all_fields[(pkg, name)]:
            if not keep(tgt, info):
                continue
            if info:
                strategic, apply, retain, item = info
                lst = (
                    f"Some(&List {{ strategic: {lt(strategic, item)}, apply: {lt(apply, item)}, "
                    f"retain_keys: {'true' if retain else 'false'} }})"
                )
            else:
                lst = "None"
            rows.append(f'fd("{json_name}", {ty(tgt, pkg)}, {lst})')
        emitted.setdefault(pkg, []).append((name, rows))

    index = []
    for key, (_, api_version) in API_PACKAGES.items():
        for (pkg, name) in relevant:
            if pkg == key:
                index.append((api_version, name, pkg))
    index.sort()

    print("// @generated by scripts/gen-merge-keys.py from the Go types of k8s.io/api and")
    print("// k8s.io/apimachinery v0.33. Do not edit.")
    print("//! The list fields of the built-in types that merge, and the struct fields that lead to them.")
    print()
    print("use super::{List, Lt, Type, fd, k};")
    print()
    print("/// The types that hold a list that merges: (apiVersion, type name, fields), sorted.")
    print("pub static TYPES: &[(&str, &str, &Type)] = &[")
    for api_version, name, pkg in index:
        print(f'    ("{api_version}", "{name}", &{pkg}::{name}),')
    print("];")
    for pkg in sorted(emitted):
        print()
        # Types no kind of the index reaches (meta/v1 list types) are written all the same.
        print("#[allow(dead_code, non_upper_case_globals)]")
        print(f"pub mod {pkg} {{")
        print("    use super::*;")
        for name, rows in sorted(emitted[pkg]):
            print(f"    pub static {name}: Type = Type {{ fields: &[")
            for r in rows:
                print(f"        {r},")
            print("    ] };")
        print("}")


def repr_str(json_text):
    """A Rust string literal holding JSON text."""
    return '"' + json_text.replace("\\", "\\\\").replace('"', '\\"') + '"'


main()
