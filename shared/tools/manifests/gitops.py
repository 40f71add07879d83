"""Delivery by GitOps: an Argo CD Application per overlay and the Kargo pipeline that feeds them.

Kargo's Warehouse watches the released image (``Platform.prod_image``, semver tags) and the
manifests on ``Platform.revision``; each new image or manifest commit becomes Freight. The
``dev`` Stage takes Freight straight from the Warehouse, ``prod`` only Freight that ``dev``
has verified (promotion order = :data:`~shared.tools.manifests.model.OVERLAYS`). A promotion
renders the Stage's overlay at the Freight's commit with the Freight's image tag
(``kustomize-set-image`` + ``kustomize-build``), adds ``components/`` and ``keda/``, pushes the
result to the Stage's own branch (``stage/<overlay>``) and syncs the Stage's Argo CD
Application, which tracks that branch.

Rendered branches rather than commits to the overlay on the main branch: the overlays there
are generated files (``fleet manifests render --check`` fails on any edit), so Kargo must not
rewrite them; and ``prod`` gets exactly the manifests ``dev`` ran.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from shared.tools.manifests.model import (
    OVERLAYS,
    PART_OF,
    Document,
    Manifest,
    Platform,
    RenderedFile,
    labels,
    meta,
)

__all__ = [
    "AUTHORIZED_STAGE",
    "WAREHOUSE",
    "application",
    "application_name",
    "files",
    "image_constraint",
    "project",
    "stage",
    "stage_branch",
    "warehouse",
]

#: Argo CD Application annotation naming the one Kargo Stage allowed to update it.
AUTHORIZED_STAGE = "kargo.akuity.io/authorized-stage"
WAREHOUSE = PART_OF
_KARGO_API = "kargo.akuity.io/v1alpha1"


def application_name(overlay: str) -> str:
    return f"{PART_OF}-{overlay}"


def stage_branch(p: Platform, overlay: str) -> str:
    return f"{p.stage_branch_prefix}{overlay}"


def image_constraint(p: Platform, version: str) -> str:
    """The Warehouse's semver constraint: ``Platform.image_constraint``, or from the package
    ``version`` up to the next major (a new major is a deliberate change of this constraint)."""
    if p.image_constraint is not None:
        return p.image_constraint
    major = int(version.split(".", 1)[0])
    return f">={version}, <{major + 1}.0.0"


def application(p: Platform, overlay: str) -> Manifest:
    """``overlay``'s Argo CD Application: the Stage's rendered branch, into ``p.cluster(overlay)``."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {
            "name": application_name(overlay),
            "namespace": p.argocd_namespace,
            "labels": labels("gitops", application_name(overlay)),
            "annotations": {AUTHORIZED_STAGE: f"{p.kargo_project}:{overlay}"},
            "finalizers": ["resources-finalizer.argocd.argoproj.io"],
        },
        "spec": {
            "project": "default",
            "destination": {"server": p.cluster(overlay), "namespace": p.namespace},
            "source": {
                "repoURL": p.repo_url,
                "targetRevision": stage_branch(p, overlay),
                "path": ".",
                "directory": {"recurse": True},
            },
            "syncPolicy": {
                "automated": {"prune": True, "selfHeal": True},
                "syncOptions": ["ServerSideApply=true"],
            },
            "ignoreDifferences": [
                {"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]}
            ],
        },
    }


def project(p: Platform) -> Manifest:
    return {
        "apiVersion": _KARGO_API,
        "kind": "Project",
        "metadata": {"name": p.kargo_project, "labels": labels("gitops")},
    }


def warehouse(p: Platform, version: str) -> Manifest:
    return {
        "apiVersion": _KARGO_API,
        "kind": "Warehouse",
        "metadata": meta(WAREHOUSE, p.kargo_project, labels("gitops", WAREHOUSE)),
        "spec": {
            "interval": "5m",
            "freightCreationPolicy": "Automatic",
            "subscriptions": [
                {
                    "image": {
                        "repoURL": p.prod_image,
                        "imageSelectionStrategy": "SemVer",
                        "constraint": image_constraint(p, version),
                        "strictSemvers": True,
                        "discoveryLimit": 10,
                    }
                },
                {
                    "git": {
                        "repoURL": p.repo_url,
                        "branch": p.revision,
                        "commitSelectionStrategy": "NewestFromBranch",
                        "includePaths": ["components", "deploy", "keda"],
                    }
                },
            ],
        },
    }


def _promotion_steps(p: Platform, overlay: str) -> list[Manifest]:
    overlay_dir = f"./src/deploy/overlays/{overlay}"
    return [
        {
            "uses": "git-clone",
            "config": {
                "repoURL": "${{ vars.gitRepo }}",
                "checkout": [
                    {"commit": "${{ commitFrom(vars.gitRepo).ID }}", "path": "./src"},
                    {"branch": stage_branch(p, overlay), "create": True, "path": "./out"},
                ],
            },
        },
        {"uses": "git-clear", "config": {"path": "./out"}},
        {
            "uses": "kustomize-set-image",
            "as": "update-image",
            "config": {
                "path": overlay_dir,
                "images": [
                    {
                        "image": p.image,
                        "newName": "${{ vars.imageRepo }}",
                        "tag": "${{ imageFrom(vars.imageRepo).Tag }}",
                    }
                ],
            },
        },
        {"uses": "kustomize-build", "config": {"path": overlay_dir, "outPath": "./out/deploy.yaml"}},
        {"uses": "copy", "config": {"inPath": "./src/components", "outPath": "./out/components"}},
        {"uses": "copy", "config": {"inPath": "./src/keda", "outPath": "./out/keda"}},
        {
            "uses": "git-commit",
            "as": "commit",
            "config": {"path": "./out", "message": "${{ outputs['update-image'].commitMessage }}"},
        },
        {"uses": "git-push", "config": {"path": "./out"}},
        {
            "uses": "argocd-update",
            "config": {
                "apps": [
                    {
                        "name": application_name(overlay),
                        "namespace": p.argocd_namespace,
                        "sources": [
                            {
                                "repoURL": "${{ vars.gitRepo }}",
                                "desiredRevision": "${{ outputs.commit.commit }}",
                            }
                        ],
                    }
                ]
            },
        },
    ]


def stage(p: Platform, overlay: str, upstream: str | None) -> Manifest:
    """The Stage ``overlay``: Freight from the Warehouse (``upstream`` None) or from the
    Stage ``upstream``; its promotion renders the overlay to ``stage/<overlay>``."""
    sources: Manifest = {"direct": True} if upstream is None else {"stages": [upstream]}
    return {
        "apiVersion": _KARGO_API,
        "kind": "Stage",
        "metadata": meta(overlay, p.kargo_project, labels("gitops", overlay)),
        "spec": {
            "requestedFreight": [{"origin": {"kind": "Warehouse", "name": WAREHOUSE}, "sources": sources}],
            "promotionTemplate": {
                "spec": {
                    "vars": [
                        {"name": "gitRepo", "value": p.repo_url},
                        {"name": "imageRepo", "value": p.prod_image},
                    ],
                    "steps": _promotion_steps(p, overlay),
                }
            },
        },
    }


def files(p: Platform, version: str) -> list[RenderedFile]:
    """``deploy/argocd/application.yaml`` and ``deploy/kargo/*.yaml``."""
    apps = RenderedFile(
        PurePosixPath("deploy/argocd/application.yaml"),
        tuple(
            Document(
                application(p, overlay),
                (
                    f"Argo CD syncs the {overlay} overlay as Kargo rendered it to branch "
                    f"{stage_branch(p, overlay)!r} (the Deployments, components/ and keda/), into "
                    f"{p.cluster(overlay)}. Only the Kargo Stage {overlay!r} may update it (annotation). "
                    "KEDA owns the Deployments' replicas, hence ignoreDifferences.",
                ),
            )
            for overlay in OVERLAYS
        ),
    )
    kargo_project = RenderedFile(
        PurePosixPath("deploy/kargo/project.yaml"),
        (
            Document(
                project(p),
                (
                    f"The Kargo Project {p.kargo_project!r}: Kargo creates the namespace of the same",
                    "name, where the Warehouse, the Stages and the git credentials Secret live.",
                ),
            ),
        ),
    )
    kargo_warehouse = RenderedFile(
        PurePosixPath("deploy/kargo/warehouse.yaml"),
        (
            Document(
                warehouse(p, version),
                (
                    f"Freight = a release of {p.prod_image} (semver tags only) + a commit of "
                    f"{p.revision!r} touching the manifests: a new image or a manifest change each "
                    "start a promotion through the Stages.",
                ),
            ),
        ),
    )
    upstreams = (None, *OVERLAYS[:-1])
    stages = RenderedFile(
        PurePosixPath("deploy/kargo/stages.yaml"),
        tuple(
            Document(
                stage(p, overlay, upstream),
                (
                    f"Stage {overlay!r}: Freight "
                    + ("straight from the Warehouse" if upstream is None else f"that Stage {upstream!r} has")
                    + f"; a promotion renders deploy/overlays/{overlay} with the Freight's image tag to "
                    f"branch {stage_branch(p, overlay)!r} and syncs Argo CD's {application_name(overlay)}.",
                ),
            )
            for overlay, upstream in zip(OVERLAYS, upstreams, strict=True)
        ),
    )
    return [apps, kargo_project, kargo_warehouse, stages]
