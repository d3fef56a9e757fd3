from django.apps import AppConfig


class MailTasksConfig(AppConfig):
    name = "mail_tasks"
    verbose_name = "Email"
