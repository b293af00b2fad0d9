"""Policies: the policy files and their front matter, the runtime snapshot with its funnel (screening),
hot reload, and `policy lint`."""
