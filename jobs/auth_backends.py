"""The project's permission backend: Django's ModelBackend, asked in an
order that often saves a query.

Django's ModelBackend.has_perm loads every permission the user has, their
own and their groups', in two queries, whatever permission is asked. This
one asks the user's own permissions first (one query) and their groups'
only if the permission is not among them: the same answer, from the same
queries and per-request caches, one query fewer when a user holds the
permission directly (an API client's account, as the API's tests and
benchmark set up). A permission held through a group, or not at all, still
costs both queries. Nothing is kept beyond the user object of one request,
so a revoked permission shows on the next one. The group query is the
dearer of the two (a join through the groups): it was 1.7 of the 2.5 ms
the check added to an API enqueue while Django's queries were still planned
on every request (BENCHMARKS.md, "Latency: one job on an idle worker").
"""

from django.contrib.auth import backends


class ModelBackend(backends.ModelBackend):
    def has_perm(self, user_obj, perm, obj=None):
        if not user_obj.is_active:
            return False
        # Each set is cached on user_obj (Django's _user_perm_cache and
        # _group_perm_cache), and get_all_permissions reuses them.
        return perm in self.get_user_permissions(user_obj, obj) or perm in self.get_group_permissions(user_obj, obj)

    async def ahas_perm(self, user_obj, perm, obj=None):
        if not user_obj.is_active:
            return False
        return perm in await self.aget_user_permissions(user_obj, obj) or perm in await self.aget_group_permissions(
            user_obj, obj
        )
