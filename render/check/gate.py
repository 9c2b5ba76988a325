"""SEO findings + Lighthouse scores and budgets -> one verdict that gates the publish."""

from __future__ import annotations

from dataclasses import dataclass

from render import seo
from render.errors import CheckFailed
from render.lighthouse import LighthouseReport


@dataclass(frozen=True, kw_only=True)
class CheckReport:
    seo: seo.SeoReport
    lighthouse: LighthouseReport
    allow_seo_errors: bool = False

    @property
    def seo_blocks(self) -> bool:
        return self.seo.blocking and not self.allow_seo_errors

    @property
    def passed(self) -> bool:
        return not self.seo_blocks and not self.lighthouse.blocking

    def summary(self) -> list[str]:
        """Short lines for the CLI: SEO counts, then Lighthouse scores."""
        lines = seo.summary_lines(self.seo)
        if self.lighthouse.enabled:
            for audit in sorted(self.lighthouse.audits, key=lambda a: a.path):
                scores = ", ".join(
                    f"{k} {v:.2f}" for k, v in sorted(audit.scores.items()) if v is not None
                )
                lines.append(f"lighthouse {audit.path}: {scores}")
            for finding in self.lighthouse.findings:
                lines.append(f"no-JavaScript read {finding.path}: {finding.message}")
            for error in self.lighthouse.errors:
                lines.append(f"lighthouse {error.path}: {error.kind.value}: {error.message}")
            for failure in self.lighthouse.failures:
                lines.append(f"lighthouse budget {failure.path}: {failure.message}")
        return lines


def gate(report: CheckReport) -> None:
    """Raise ``CheckFailed`` when the checks block this publish."""
    if report.seo_blocks:
        raise seo.blocking_error(report.seo)
    lighthouse_gate(report.lighthouse)


def lighthouse_gate(lh: LighthouseReport) -> None:
    """Raise ``CheckFailed`` when Lighthouse's findings block this publish."""
    if lh.blocking:
        lines = [f"  {f.path}: {f.message}" for f in lh.failures]
        lines += [f"  {e.path}: {e.kind.value}: {e.message}" for e in lh.errors]
        raise CheckFailed(
            f"Lighthouse: {len(lh.failures)} score(s) under budget, {len(lh.errors)} audit(s) failed",
            detail="\n".join(lines) + "\n  'render report SITE' shows every score",
            hint="fix the pages, lower [lighthouse.budgets], or set [lighthouse] block = false",
        )
