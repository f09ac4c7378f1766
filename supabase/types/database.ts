export type Json =
  | string
  | number
  | boolean
  | null
  | { [key: string]: Json | undefined }
  | Json[]

export type Database = {
  public: {
    Tables: {
      alerts: {
        Row: {
          acknowledged_at: string | null
          acknowledged_by: string | null
          call_session_id: string | null
          created_at: string
          dedupe_key: string | null
          details: NonNullable<Json>
          device_id: string | null
          household_id: string
          id: string
          kind: string
          message: string
          relative_id: string | null
          severity: string
          updated_at: string
        }
        Insert: {
          acknowledged_at?: string | null
          acknowledged_by?: string | null
          call_session_id?: string | null
          created_at?: string
          dedupe_key?: string | null
          details?: NonNullable<Json>
          device_id?: string | null
          household_id: string
          id?: string
          kind: string
          message: string
          relative_id?: string | null
          severity?: string
          updated_at?: string
        }
        Update: {
          acknowledged_at?: string | null
          acknowledged_by?: string | null
          call_session_id?: string | null
          created_at?: string
          dedupe_key?: string | null
          details?: NonNullable<Json>
          device_id?: string | null
          household_id?: string
          id?: string
          kind?: string
          message?: string
          relative_id?: string | null
          severity?: string
          updated_at?: string
        }
        Relationships: [
          {
            foreignKeyName: "alerts_call_session_id_fkey"
            columns: ["call_session_id"]
            isOneToOne: false
            referencedRelation: "call_sessions"
            referencedColumns: ["id"]
          },
          {
            foreignKeyName: "alerts_device_id_fkey"
            columns: ["device_id"]
            isOneToOne: false
            referencedRelation: "device_pairs"
            referencedColumns: ["id"]
          },
          {
            foreignKeyName: "alerts_device_id_fkey"
            columns: ["device_id"]
            isOneToOne: false
            referencedRelation: "devices"
            referencedColumns: ["id"]
          },
          {
            foreignKeyName: "alerts_household_id_fkey"
            columns: ["household_id"]
            isOneToOne: false
            referencedRelation: "households"
            referencedColumns: ["id"]
          },
          {
            foreignKeyName: "alerts_relative_id_household_id_fkey"
            columns: ["relative_id", "household_id"]
            isOneToOne: false
            referencedRelation: "relatives"
            referencedColumns: ["id", "household_id"]
          },
        ]
      }
      call_logs: {
        Row: {
          call_session_id: string
          call_successful: string | null
          concerns: string[]
          conversation_id: string | null
          cost: number | null
          created_at: string
          data_collection: NonNullable<Json>
          discrepancies: NonNullable<Json>
          duration_secs: number | null
          evaluation: NonNullable<Json>
          household_id: string
          id: string
          mood: string | null
          outcome: string
          relative_id: string
          started_at: string | null
          summary: string | null
          summary_expired_at: string | null
          termination_reason: string | null
          title: string | null
          transcript: NonNullable<Json>
          transcript_expired_at: string | null
          updated_at: string
          verified_at: string | null
        }
        Insert: {
          call_session_id: string
          call_successful?: string | null
          concerns?: string[]
          conversation_id?: string | null
          cost?: number | null
          created_at?: string
          data_collection?: NonNullable<Json>
          discrepancies?: NonNullable<Json>
          duration_secs?: number | null
          evaluation?: NonNullable<Json>
          household_id: string
          id?: string
          mood?: string | null
          outcome: string
          relative_id: string
          started_at?: string | null
          summary?: string | null
          summary_expired_at?: string | null
          termination_reason?: string | null
          title?: string | null
          transcript?: NonNullable<Json>
          transcript_expired_at?: string | null
          updated_at?: string
          verified_at?: string | null
        }
        Update: {
          call_session_id?: string
          call_successful?: string | null
          concerns?: string[]
          conversation_id?: string | null
          cost?: number | null
          created_at?: string
          data_collection?: NonNullable<Json>
          discrepancies?: NonNullable<Json>
          duration_secs?: number | null
          evaluation?: NonNullable<Json>
          household_id?: string
          id?: string
          mood?: string | null
          outcome?: string
          relative_id?: string
          started_at?: string | null
          summary?: string | null
          summary_expired_at?: string | null
          termination_reason?: string | null
          title?: string | null
          transcript?: NonNullable<Json>
          transcript_expired_at?: string | null
          updated_at?: string
          verified_at?: string | null
        }
        Relationships: [
          {
            foreignKeyName: "call_logs_call_session_id_fkey"
            columns: ["call_session_id"]
            isOneToOne: true
            referencedRelation: "call_sessions"
            referencedColumns: ["id"]
          },
          {
            foreignKeyName: "call_logs_relative_id_household_id_fkey"
            columns: ["relative_id", "household_id"]
            isOneToOne: false
            referencedRelation: "relatives"
            referencedColumns: ["id", "household_id"]
          },
        ]
      }
      call_sessions: {
        Row: {
          answered_at: string | null
          attempt: number
          conversation_id: string | null
          created_at: string
          device_id: string | null
          ended_at: string | null
          failure_reason: string | null
          household_id: string
          id: string
          max_attempts: number
          occurrence_at: string
          origin: string
          relative_id: string
          retry_interval: string
          ring_timeout: string
          ringing_at: string | null
          schedule_id: string | null
          status: string
          updated_at: string
          withdrawn_at: string | null
        }
        Insert: {
          answered_at?: string | null
          attempt?: number
          conversation_id?: string | null
          created_at?: string
          device_id?: string | null
          ended_at?: string | null
          failure_reason?: string | null
          household_id: string
          id?: string
          max_attempts?: number
          occurrence_at: string
          origin?: string
          relative_id: string
          retry_interval?: string
          ring_timeout?: string
          ringing_at?: string | null
          schedule_id?: string | null
          status?: string
          updated_at?: string
          withdrawn_at?: string | null
        }
        Update: {
          answered_at?: string | null
          attempt?: number
          conversation_id?: string | null
          created_at?: string
          device_id?: string | null
          ended_at?: string | null
          failure_reason?: string | null
          household_id?: string
          id?: string
          max_attempts?: number
          occurrence_at?: string
          origin?: string
          relative_id?: string
          retry_interval?: string
          ring_timeout?: string
          ringing_at?: string | null
          schedule_id?: string | null
          status?: string
          updated_at?: string
          withdrawn_at?: string | null
        }
        Relationships: [
          {
            foreignKeyName: "call_sessions_device_id_fkey"
            columns: ["device_id"]
            isOneToOne: false
            referencedRelation: "device_pairs"
            referencedColumns: ["id"]
          },
          {
            foreignKeyName: "call_sessions_device_id_fkey"
            columns: ["device_id"]
            isOneToOne: false
            referencedRelation: "devices"
            referencedColumns: ["id"]
          },
          {
            foreignKeyName: "call_sessions_relative_id_household_id_fkey"
            columns: ["relative_id", "household_id"]
            isOneToOne: false
            referencedRelation: "relatives"
            referencedColumns: ["id", "household_id"]
          },
          {
            foreignKeyName: "call_sessions_schedule_id_fkey"
            columns: ["schedule_id"]
            isOneToOne: false
            referencedRelation: "schedules"
            referencedColumns: ["id"]
          },
        ]
      }
      contact_methods: {
        Row: {
          address: string
          channel: string
          created_at: string
          disabled_at: string | null
          disabled_reason: string | null
          household_id: string
          id: string
          kinds: string[] | null
          label: string | null
          push_auth: string | null
          push_p256dh: string | null
          updated_at: string
          user_id: string
          verified_at: string | null
        }
        Insert: {
          address: string
          channel: string
          created_at?: string
          disabled_at?: string | null
          disabled_reason?: string | null
          household_id: string
          id?: string
          kinds?: string[] | null
          label?: string | null
          push_auth?: string | null
          push_p256dh?: string | null
          updated_at?: string
          user_id: string
          verified_at?: string | null
        }
        Update: {
          address?: string
          channel?: string
          created_at?: string
          disabled_at?: string | null
          disabled_reason?: string | null
          household_id?: string
          id?: string
          kinds?: string[] | null
          label?: string | null
          push_auth?: string | null
          push_p256dh?: string | null
          updated_at?: string
          user_id?: string
          verified_at?: string | null
        }
        Relationships: [
          {
            foreignKeyName: "contact_methods_household_id_user_id_fkey"
            columns: ["household_id", "user_id"]
            isOneToOne: false
            referencedRelation: "household_members"
            referencedColumns: ["household_id", "user_id"]
          },
        ]
      }
      device_pairs: {
        Row: {
          apns_token: string | null
          apns_token_invalid_reason: string | null
          apns_token_invalidated_at: string | null
          app_version: string | null
          created_at: string
          created_by: string | null
          fcm_token: string | null
          fcm_token_invalid_reason: string | null
          fcm_token_invalidated_at: string | null
          full_screen_intent_permission: boolean | null
          household_id: string
          id: string
          label: string | null
          last_seen_at: string | null
          notification_permission: boolean | null
          paired_at: string | null
          pairing_code_expires_at: string | null
          pairing_code_hash: string | null
          pairing_failed_attempts: number
          pairing_reference: string | null
          platform: string | null
          relative_id: string
          revoked_at: string | null
          revoked_reason: string | null
          secret_hash: string | null
          status: string
          updated_at: string
          voip_token: string | null
          voip_token_invalid_reason: string | null
          voip_token_invalidated_at: string | null
        }
        Insert: {
          apns_token?: string | null
          apns_token_invalid_reason?: string | null
          apns_token_invalidated_at?: string | null
          app_version?: string | null
          created_at?: string
          created_by?: string | null
          fcm_token?: string | null
          fcm_token_invalid_reason?: string | null
          fcm_token_invalidated_at?: string | null
          full_screen_intent_permission?: boolean | null
          household_id: string
          id?: string
          label?: string | null
          last_seen_at?: string | null
          notification_permission?: boolean | null
          paired_at?: string | null
          pairing_code_expires_at?: string | null
          pairing_code_hash?: string | null
          pairing_failed_attempts?: number
          pairing_reference?: string | null
          platform?: string | null
          relative_id: string
          revoked_at?: string | null
          revoked_reason?: string | null
          secret_hash?: string | null
          status?: string
          updated_at?: string
          voip_token?: string | null
          voip_token_invalid_reason?: string | null
          voip_token_invalidated_at?: string | null
        }
        Update: {
          apns_token?: string | null
          apns_token_invalid_reason?: string | null
          apns_token_invalidated_at?: string | null
          app_version?: string | null
          created_at?: string
          created_by?: string | null
          fcm_token?: string | null
          fcm_token_invalid_reason?: string | null
          fcm_token_invalidated_at?: string | null
          full_screen_intent_permission?: boolean | null
          household_id?: string
          id?: string
          label?: string | null
          last_seen_at?: string | null
          notification_permission?: boolean | null
          paired_at?: string | null
          pairing_code_expires_at?: string | null
          pairing_code_hash?: string | null
          pairing_failed_attempts?: number
          pairing_reference?: string | null
          platform?: string | null
          relative_id?: string
          revoked_at?: string | null
          revoked_reason?: string | null
          secret_hash?: string | null
          status?: string
          updated_at?: string
          voip_token?: string | null
          voip_token_invalid_reason?: string | null
          voip_token_invalidated_at?: string | null
        }
        Relationships: [
          {
            foreignKeyName: "device_pairs_relative_id_household_id_fkey"
            columns: ["relative_id", "household_id"]
            isOneToOne: false
            referencedRelation: "relatives"
            referencedColumns: ["id", "household_id"]
          },
        ]
      }
      erasures: {
        Row: {
          conversations: number
          household_id: string
          id: string
          provider_confirmed: number
          provider_done_at: string | null
          provider_failed: number
          removed: NonNullable<Json>
          requested_at: string
          requested_by: string | null
          scope: string
          updated_at: string
        }
        Insert: {
          conversations?: number
          household_id: string
          id?: string
          provider_confirmed?: number
          provider_done_at?: string | null
          provider_failed?: number
          removed?: NonNullable<Json>
          requested_at?: string
          requested_by?: string | null
          scope: string
          updated_at?: string
        }
        Update: {
          conversations?: number
          household_id?: string
          id?: string
          provider_confirmed?: number
          provider_done_at?: string | null
          provider_failed?: number
          removed?: NonNullable<Json>
          requested_at?: string
          requested_by?: string | null
          scope?: string
          updated_at?: string
        }
        Relationships: [
          {
            foreignKeyName: "erasures_household_id_fkey"
            columns: ["household_id"]
            isOneToOne: false
            referencedRelation: "households"
            referencedColumns: ["id"]
          },
        ]
      }
      escalation_contacts: {
        Row: {
          created_at: string
          household_id: string
          step: number
          updated_at: string
          user_id: string
        }
        Insert: {
          created_at?: string
          household_id: string
          step: number
          updated_at?: string
          user_id: string
        }
        Update: {
          created_at?: string
          household_id?: string
          step?: number
          updated_at?: string
          user_id?: string
        }
        Relationships: [
          {
            foreignKeyName: "escalation_contacts_household_id_user_id_fkey"
            columns: ["household_id", "user_id"]
            isOneToOne: true
            referencedRelation: "household_members"
            referencedColumns: ["household_id", "user_id"]
          },
        ]
      }
      escalation_policies: {
        Row: {
          created_at: string
          escalate_kinds: string[]
          household_id: string
          repeats: number
          updated_at: string
          wait: string
        }
        Insert: {
          created_at?: string
          escalate_kinds?: string[]
          household_id: string
          repeats?: number
          updated_at?: string
          wait?: string
        }
        Update: {
          created_at?: string
          escalate_kinds?: string[]
          household_id?: string
          repeats?: number
          updated_at?: string
          wait?: string
        }
        Relationships: [
          {
            foreignKeyName: "escalation_policies_household_id_fkey"
            columns: ["household_id"]
            isOneToOne: true
            referencedRelation: "households"
            referencedColumns: ["id"]
          },
        ]
      }
      household_members: {
        Row: {
          created_at: string
          household_id: string
          role: string
          updated_at: string
          user_id: string
        }
        Insert: {
          created_at?: string
          household_id: string
          role?: string
          updated_at?: string
          user_id: string
        }
        Update: {
          created_at?: string
          household_id?: string
          role?: string
          updated_at?: string
          user_id?: string
        }
        Relationships: [
          {
            foreignKeyName: "household_members_household_id_fkey"
            columns: ["household_id"]
            isOneToOne: false
            referencedRelation: "households"
            referencedColumns: ["id"]
          },
        ]
      }
      households: {
        Row: {
          created_at: string
          created_by: string | null
          erased_at: string | null
          id: string
          name: string
          updated_at: string
        }
        Insert: {
          created_at?: string
          created_by?: string | null
          erased_at?: string | null
          id?: string
          name: string
          updated_at?: string
        }
        Update: {
          created_at?: string
          created_by?: string | null
          erased_at?: string | null
          id?: string
          name?: string
          updated_at?: string
        }
        Relationships: []
      }
      member_alert_settings: {
        Row: {
          created_at: string
          household_id: string
          quiet_end: string | null
          quiet_hours_hold_critical: boolean
          quiet_start: string | null
          timezone: string | null
          updated_at: string
          user_id: string
        }
        Insert: {
          created_at?: string
          household_id: string
          quiet_end?: string | null
          quiet_hours_hold_critical?: boolean
          quiet_start?: string | null
          timezone?: string | null
          updated_at?: string
          user_id: string
        }
        Update: {
          created_at?: string
          household_id?: string
          quiet_end?: string | null
          quiet_hours_hold_critical?: boolean
          quiet_start?: string | null
          timezone?: string | null
          updated_at?: string
          user_id?: string
        }
        Relationships: [
          {
            foreignKeyName: "member_alert_settings_household_id_user_id_fkey"
            columns: ["household_id", "user_id"]
            isOneToOne: true
            referencedRelation: "household_members"
            referencedColumns: ["household_id", "user_id"]
          },
        ]
      }
      notification_queue: {
        Row: {
          attempt: number
          call_session_id: string
          created_at: string
          deadline_at: string
          device_id: string | null
          fallback_provider: string | null
          fallback_token: string | null
          household_id: string
          id: string
          last_error: string | null
          locked_by: string | null
          locked_until: string | null
          next_attempt_at: string | null
          occurrence_at: string
          payload: NonNullable<Json>
          platform: string
          presence_claimed_at: string | null
          provider: string
          provider_attempts: number
          provider_message_id: string | null
          push_token: string
          ring_expires_at: string | null
          schedule_id: string | null
          send_at: string
          sent_at: string | null
          status: string
          updated_at: string
        }
        Insert: {
          attempt?: number
          call_session_id: string
          created_at?: string
          deadline_at: string
          device_id?: string | null
          fallback_provider?: string | null
          fallback_token?: string | null
          household_id: string
          id?: string
          last_error?: string | null
          locked_by?: string | null
          locked_until?: string | null
          next_attempt_at?: string | null
          occurrence_at: string
          payload?: NonNullable<Json>
          platform: string
          presence_claimed_at?: string | null
          provider: string
          provider_attempts?: number
          provider_message_id?: string | null
          push_token: string
          ring_expires_at?: string | null
          schedule_id?: string | null
          send_at: string
          sent_at?: string | null
          status?: string
          updated_at?: string
        }
        Update: {
          attempt?: number
          call_session_id?: string
          created_at?: string
          deadline_at?: string
          device_id?: string | null
          fallback_provider?: string | null
          fallback_token?: string | null
          household_id?: string
          id?: string
          last_error?: string | null
          locked_by?: string | null
          locked_until?: string | null
          next_attempt_at?: string | null
          occurrence_at?: string
          payload?: NonNullable<Json>
          platform?: string
          presence_claimed_at?: string | null
          provider?: string
          provider_attempts?: number
          provider_message_id?: string | null
          push_token?: string
          ring_expires_at?: string | null
          schedule_id?: string | null
          send_at?: string
          sent_at?: string | null
          status?: string
          updated_at?: string
        }
        Relationships: [
          {
            foreignKeyName: "notification_queue_call_session_id_fkey"
            columns: ["call_session_id"]
            isOneToOne: true
            referencedRelation: "call_sessions"
            referencedColumns: ["id"]
          },
        ]
      }
      privacy_settings: {
        Row: {
          alert_messages: string
          audio_refs: string
          call_logs: string
          created_at: string
          household_id: string
          member_reads: string
          snapshots: string
          summaries: string
          transcripts: string
          updated_at: string
          updated_by: string | null
          webhook_bodies: string
        }
        Insert: {
          alert_messages?: string
          audio_refs?: string
          call_logs?: string
          created_at?: string
          household_id: string
          member_reads?: string
          snapshots?: string
          summaries?: string
          transcripts?: string
          updated_at?: string
          updated_by?: string | null
          webhook_bodies?: string
        }
        Update: {
          alert_messages?: string
          audio_refs?: string
          call_logs?: string
          created_at?: string
          household_id?: string
          member_reads?: string
          snapshots?: string
          summaries?: string
          transcripts?: string
          updated_at?: string
          updated_by?: string | null
          webhook_bodies?: string
        }
        Relationships: [
          {
            foreignKeyName: "privacy_settings_household_id_fkey"
            columns: ["household_id"]
            isOneToOne: true
            referencedRelation: "households"
            referencedColumns: ["id"]
          },
        ]
      }
      relatives: {
        Row: {
          created_at: string
          display_name: string
          household_id: string
          id: string
          timezone: string
          updated_at: string
        }
        Insert: {
          created_at?: string
          display_name: string
          household_id: string
          id?: string
          timezone: string
          updated_at?: string
        }
        Update: {
          created_at?: string
          display_name?: string
          household_id?: string
          id?: string
          timezone?: string
          updated_at?: string
        }
        Relationships: [
          {
            foreignKeyName: "relatives_household_id_fkey"
            columns: ["household_id"]
            isOneToOne: false
            referencedRelation: "households"
            referencedColumns: ["id"]
          },
        ]
      }
      schedules: {
        Row: {
          active: boolean
          created_at: string
          created_by: string | null
          days_of_week: number[] | null
          household_id: string
          id: string
          kind: string
          local_time: string | null
          max_attempts: number
          next_run_at: string | null
          paused_until: string | null
          relative_id: string
          retry_interval: string
          ring_timeout: string
          run_at: string | null
          timezone: string
          title: string | null
          updated_at: string
        }
        Insert: {
          active?: boolean
          created_at?: string
          created_by?: string | null
          days_of_week?: number[] | null
          household_id: string
          id?: string
          kind?: string
          local_time?: string | null
          max_attempts?: number
          next_run_at?: string | null
          paused_until?: string | null
          relative_id: string
          retry_interval?: string
          ring_timeout?: string
          run_at?: string | null
          timezone: string
          title?: string | null
          updated_at?: string
        }
        Update: {
          active?: boolean
          created_at?: string
          created_by?: string | null
          days_of_week?: number[] | null
          household_id?: string
          id?: string
          kind?: string
          local_time?: string | null
          max_attempts?: number
          next_run_at?: string | null
          paused_until?: string | null
          relative_id?: string
          retry_interval?: string
          ring_timeout?: string
          run_at?: string | null
          timezone?: string
          title?: string | null
          updated_at?: string
        }
        Relationships: [
          {
            foreignKeyName: "schedules_relative_id_household_id_fkey"
            columns: ["relative_id", "household_id"]
            isOneToOne: false
            referencedRelation: "relatives"
            referencedColumns: ["id", "household_id"]
          },
        ]
      }
      transcript_reads: {
        Row: {
          call_session_id: string
          household_id: string
          id: number
          read_at: string
          user_id: string | null
          via: string
        }
        Insert: {
          call_session_id: string
          household_id: string
          id?: never
          read_at?: string
          user_id?: string | null
          via?: string
        }
        Update: {
          call_session_id?: string
          household_id?: string
          id?: never
          read_at?: string
          user_id?: string | null
          via?: string
        }
        Relationships: [
          {
            foreignKeyName: "transcript_reads_call_session_id_fkey"
            columns: ["call_session_id"]
            isOneToOne: false
            referencedRelation: "call_sessions"
            referencedColumns: ["id"]
          },
          {
            foreignKeyName: "transcript_reads_household_id_fkey"
            columns: ["household_id"]
            isOneToOne: false
            referencedRelation: "households"
            referencedColumns: ["id"]
          },
        ]
      }
      webhook_events: {
        Row: {
          call_session_id: string | null
          conversation_id: string | null
          created_at: string
          dedupe_key: string
          error: string | null
          event_timestamp: string | null
          event_type: string
          household_id: string | null
          id: string
          payload: Json | null
          payload_bytes: number
          processed_at: string | null
          provider: string
          received_at: string
          status: string
          updated_at: string
        }
        Insert: {
          call_session_id?: string | null
          conversation_id?: string | null
          created_at?: string
          dedupe_key: string
          error?: string | null
          event_timestamp?: string | null
          event_type: string
          household_id?: string | null
          id?: string
          payload?: Json | null
          payload_bytes?: number
          processed_at?: string | null
          provider?: string
          received_at?: string
          status?: string
          updated_at?: string
        }
        Update: {
          call_session_id?: string | null
          conversation_id?: string | null
          created_at?: string
          dedupe_key?: string
          error?: string | null
          event_timestamp?: string | null
          event_type?: string
          household_id?: string | null
          id?: string
          payload?: Json | null
          payload_bytes?: number
          processed_at?: string | null
          provider?: string
          received_at?: string
          status?: string
          updated_at?: string
        }
        Relationships: [
          {
            foreignKeyName: "webhook_events_call_session_id_fkey"
            columns: ["call_session_id"]
            isOneToOne: false
            referencedRelation: "call_sessions"
            referencedColumns: ["id"]
          },
          {
            foreignKeyName: "webhook_events_household_id_fkey"
            columns: ["household_id"]
            isOneToOne: false
            referencedRelation: "households"
            referencedColumns: ["id"]
          },
        ]
      }
    }
    Views: {
      devices: {
        Row: {
          apns_token_invalid_reason: string | null
          apns_token_invalidated_at: string | null
          app_version: string | null
          created_at: string | null
          created_by: string | null
          fcm_token_invalid_reason: string | null
          fcm_token_invalidated_at: string | null
          full_screen_intent_permission: boolean | null
          household_id: string | null
          id: string | null
          label: string | null
          last_seen_at: string | null
          notification_permission: boolean | null
          paired_at: string | null
          pairing_code_expires_at: string | null
          pairing_failed_attempts: number | null
          platform: string | null
          relative_id: string | null
          revoked_at: string | null
          revoked_reason: string | null
          status: string | null
          updated_at: string | null
          voip_token_invalid_reason: string | null
          voip_token_invalidated_at: string | null
        }
        Insert: {
          apns_token_invalid_reason?: string | null
          apns_token_invalidated_at?: string | null
          app_version?: string | null
          created_at?: string | null
          created_by?: string | null
          fcm_token_invalid_reason?: string | null
          fcm_token_invalidated_at?: string | null
          full_screen_intent_permission?: boolean | null
          household_id?: string | null
          id?: string | null
          label?: string | null
          last_seen_at?: string | null
          notification_permission?: boolean | null
          paired_at?: string | null
          pairing_code_expires_at?: string | null
          pairing_failed_attempts?: number | null
          platform?: string | null
          relative_id?: string | null
          revoked_at?: string | null
          revoked_reason?: string | null
          status?: string | null
          updated_at?: string | null
          voip_token_invalid_reason?: string | null
          voip_token_invalidated_at?: string | null
        }
        Update: {
          apns_token_invalid_reason?: string | null
          apns_token_invalidated_at?: string | null
          app_version?: string | null
          created_at?: string | null
          created_by?: string | null
          fcm_token_invalid_reason?: string | null
          fcm_token_invalidated_at?: string | null
          full_screen_intent_permission?: boolean | null
          household_id?: string | null
          id?: string | null
          label?: string | null
          last_seen_at?: string | null
          notification_permission?: boolean | null
          paired_at?: string | null
          pairing_code_expires_at?: string | null
          pairing_failed_attempts?: number | null
          platform?: string | null
          relative_id?: string | null
          revoked_at?: string | null
          revoked_reason?: string | null
          status?: string | null
          updated_at?: string | null
          voip_token_invalid_reason?: string | null
          voip_token_invalidated_at?: string | null
        }
        Relationships: [
          {
            foreignKeyName: "device_pairs_relative_id_household_id_fkey"
            columns: ["relative_id", "household_id"]
            isOneToOne: false
            referencedRelation: "relatives"
            referencedColumns: ["id", "household_id"]
          },
        ]
      }
    }
    Functions: {
      acknowledge_alert: {
        Args: { p_alert_id: string }
        Returns: {
          acknowledged_at: string | null
          acknowledged_by: string | null
          call_session_id: string | null
          created_at: string
          dedupe_key: string | null
          details: NonNullable<Json>
          device_id: string | null
          household_id: string
          id: string
          kind: string
          message: string
          relative_id: string | null
          severity: string
          updated_at: string
        }
        SetofOptions: {
          from: "*"
          to: "alerts"
          isOneToOne: true
          isSetofReturn: false
        }
      }
      add_contact_method: {
        Args: {
          p_address?: string
          p_channel: string
          p_household_id: string
          p_kinds?: string[]
          p_label?: string
          p_subscription?: Json
        }
        Returns: Json
      }
      alert_deliveries: {
        Args: { p_alert_id?: string; p_household_id?: string; p_limit?: number }
        Returns: {
          alert_id: string
          attempts: number
          channel: string
          created_at: string
          delivery_status: string
          destination_hint: string
          household_id: string
          kind: string
          last_error: string
          method_disabled_reason: string
          outbox_id: string
          send_at: string
          sent_at: string
          status: string
          step: number
          user_id: string
        }[]
      }
      call_history: {
        Args: {
          p_before_at?: string
          p_before_id?: string
          p_household_id: string
          p_limit?: number
          p_relative_id?: string
        }
        Returns: {
          answered_at: string
          attempt: number
          call_session_id: string
          call_successful: string
          concerns: string[]
          duration_secs: number
          ended_at: string
          failure_reason: string
          mood: string
          occurrence_at: string
          origin: string
          outcome: string
          relative_id: string
          relative_name: string
          schedule_id: string
          schedule_title: string
          summary: string
          title: string
        }[]
      }
      cancel_call: { Args: { p_session_id: string }; Returns: Json }
      claim_cancel_notices: {
        Args: {
          p_lease?: string
          p_limit?: number
          p_now?: string
          p_worker: string
        }
        Returns: {
          attempts: number
          call_session_id: string
          deadline_at: string
          device_id: string
          household_id: string
          notice_id: string
          platform: string
          provider: string
          push_token: string
        }[]
      }
      claim_due_calls: {
        Args: {
          p_horizon?: string
          p_lease?: string
          p_limit?: number
          p_now?: string
          p_worker: string
        }
        Returns: {
          attempt: number
          call_session_id: string
          deadline_at: string
          device_id: string
          household_id: string
          locked_until: string
          not_before: string
          payload: Json
          platform: string
          provider: string
          provider_attempts: number
          push_token: string
          queue_id: string
          relative_id: string
          ring_expires_at: string
          send_at: string
        }[]
      }
      claim_outbox: {
        Args: {
          p_kinds?: string[]
          p_lease?: string
          p_limit?: number
          p_now?: string
          p_worker: string
        }
        Returns: {
          alert_id: string
          attempts: number
          channel: string
          deadline_at: string
          destination: Json
          household_id: string
          kind: string
          locked_until: string
          message: Json
          method_id: string
          outbox_id: string
          send_at: string
          step: number
          user_id: string
        }[]
      }
      claim_pairing_code: {
        Args: {
          p_apns_token?: string
          p_app_version: string
          p_code: string
          p_fcm_token?: string
          p_label: string
          p_pairing_id: string
          p_platform: string
          p_secret_hash: string
          p_voip_token?: string
        }
        Returns: Json
      }
      cleanup_finished: { Args: { p_now?: string }; Returns: number }
      confirm_contact_method: {
        Args: { p_code: string; p_method_id: string }
        Returns: Json
      }
      count_webhook_rejection: { Args: { p_reason: string }; Returns: number }
      create_household: {
        Args: { p_name: string }
        Returns: {
          created_at: string
          created_by: string | null
          erased_at: string | null
          id: string
          name: string
          updated_at: string
        }
        SetofOptions: {
          from: "*"
          to: "households"
          isOneToOne: true
          isSetofReturn: false
        }
      }
      create_pairing: {
        Args: { p_relative_id: string }
        Returns: {
          code: string
          device_id: string
          expires_at: string
          pairing_id: string
          reference: string
        }[]
      }
      create_pairing_code: {
        Args: { p_relative_id: string }
        Returns: {
          code: string
          device_id: string
          expires_at: string
          pairing_id: string
        }[]
      }
      device_credentials: {
        Args: { p_device_id: string }
        Returns: {
          secret_hash: string
          status: string
        }[]
      }
      device_heartbeat: {
        Args: {
          p_app_version: string
          p_device_id: string
          p_full_screen_intent_permission: boolean
          p_notification_permission: boolean
        }
        Returns: string
      }
      device_upcoming_calls: {
        Args: { p_device_id: string; p_from: string; p_to: string }
        Returns: {
          attempt: number
          call_session_id: string
          local_time: string
          occurrence_at: string
          relative_id: string
          relative_name: string
          schedule_id: string
          schedule_title: string
          status: string
          timezone: string
        }[]
      }
      enforce_retention: { Args: { p_now?: string }; Returns: Json }
      erase_household: {
        Args: { p_household_id: string; p_now?: string }
        Returns: Json
      }
      erase_relative: {
        Args: { p_now?: string; p_relative_id: string }
        Returns: Json
      }
      export_relative: {
        Args: { p_now?: string; p_relative_id: string }
        Returns: Json
      }
      next_cancel_notice_at: { Args: { p_now?: string }; Returns: string }
      next_outbox_at: { Args: { p_now?: string }; Returns: string }
      next_work_at: {
        Args: { p_now?: string; p_worker?: string }
        Returns: {
          lease_expires_at: string
          peer_leases: boolean
          ring_ends_at: string
          send_at: string
        }[]
      }
      open_alerts: {
        Args: { p_household_id: string; p_limit?: number }
        Returns: {
          acknowledged_at: string | null
          acknowledged_by: string | null
          call_session_id: string | null
          created_at: string
          dedupe_key: string | null
          details: NonNullable<Json>
          device_id: string | null
          household_id: string
          id: string
          kind: string
          message: string
          relative_id: string | null
          severity: string
          updated_at: string
        }[]
        SetofOptions: {
          from: "*"
          to: "alerts"
          isOneToOne: false
          isSetofReturn: true
        }
      }
      outbox_depth: {
        Args: Record<PropertyKey, never>
        Returns: {
          channel: string
          kind: string
          rows: number
          status: string
        }[]
      }
      pair_device: {
        Args: {
          p_apns_token: string
          p_app_version: string
          p_code: string
          p_fcm_token: string
          p_label: string
          p_pairing_id: string
          p_platform: string
          p_secret_hash: string
          p_voip_token: string
        }
        Returns: Json
      }
      pair_device_by_reference: {
        Args: {
          p_apns_token: string
          p_app_version: string
          p_code: string
          p_fcm_token: string
          p_label: string
          p_platform: string
          p_reference: string
          p_secret_hash: string
          p_voip_token: string
        }
        Returns: Json
      }
      prepare_call_accept: {
        Args: { p_device_id: string; p_session_id: string }
        Returns: Json
      }
      privacy_overview: {
        Args: { p_household_id: string; p_now?: string }
        Returns: Json
      }
      process_webhook_event: {
        Args: { p_concern_fields: string[]; p_event_id: string }
        Returns: Json
      }
      queue_depth: {
        Args: Record<PropertyKey, never>
        Returns: {
          rows: number
          status: string
        }[]
      }
      queue_upcoming_calls: { Args: { p_now?: string }; Returns: number }
      read_transcript: {
        Args: { p_call_session_id: string; p_now?: string }
        Returns: Json
      }
      record_call_event: {
        Args: {
          p_at: string
          p_conversation_id?: string
          p_device_id: string
          p_event: string
          p_session_id: string
        }
        Returns: Json
      }
      record_cancel_results: {
        Args: { p_now?: string; p_results: Json; p_worker: string }
        Returns: {
          notice_id: string
          result: string
        }[]
      }
      record_device_event: {
        Args: {
          p_at: string
          p_conversation_id?: string
          p_device_id: string
          p_event: string
          p_session_id: string
        }
        Returns: Json
      }
      record_outbox_results: {
        Args: { p_now?: string; p_results: Json; p_worker: string }
        Returns: {
          outbox_id: string
          result: string
        }[]
      }
      record_push_results: {
        Args: { p_now?: string; p_results: Json; p_worker: string }
        Returns: {
          call_session_id: string
          queue_id: string
          result: string
        }[]
      }
      record_sms_reply: {
        Args: {
          p_body: string
          p_from: string
          p_message_sid: string
          p_now?: string
        }
        Returns: Json
      }
      record_sms_status: {
        Args: {
          p_error_code?: string
          p_message_sid: string
          p_now?: string
          p_status: string
        }
        Returns: Json
      }
      redeem_alert_link: {
        Args: { p_now?: string; p_token: string }
        Returns: Json
      }
      register_worker: { Args: { p_worker: string }; Returns: boolean }
      release_due_calls: { Args: { p_now?: string }; Returns: number }
      release_leases: {
        Args: { p_ids?: string[]; p_worker: string }
        Returns: string[]
      }
      release_outbox_leases: {
        Args: { p_ids?: string[]; p_worker: string }
        Returns: string[]
      }
      remove_contact_method: {
        Args: { p_method_id: string }
        Returns: undefined
      }
      renew_leases: {
        Args: {
          p_ids: string[]
          p_lease?: string
          p_now?: string
          p_worker: string
        }
        Returns: string[]
      }
      renew_outbox_leases: {
        Args: {
          p_ids: string[]
          p_lease?: string
          p_now?: string
          p_worker: string
        }
        Returns: string[]
      }
      request_call_now: { Args: { p_relative_id: string }; Returns: string }
      reschedule: {
        Args: { p_now?: string; p_schedule_id: string }
        Returns: string
      }
      resend_contact_verification: {
        Args: { p_method_id: string }
        Returns: Json
      }
      revoke_device: {
        Args: { p_device_id: string; p_reason?: string }
        Returns: undefined
      }
      run_alert_escalations: { Args: { p_now?: string }; Returns: number }
      run_phase2_now: { Args: { p_now?: string }; Returns: number }
      set_contact_method_kinds: {
        Args: { p_kinds: string[]; p_method_id: string }
        Returns: {
          address: string
          channel: string
          created_at: string
          disabled_at: string | null
          disabled_reason: string | null
          household_id: string
          id: string
          kinds: string[] | null
          label: string | null
          push_auth: string | null
          push_p256dh: string | null
          updated_at: string
          user_id: string
          verified_at: string | null
        }
        SetofOptions: {
          from: "*"
          to: "contact_methods"
          isOneToOne: true
          isSetofReturn: false
        }
      }
      set_privacy_settings: {
        Args: { p_household_id: string; p_settings: Json }
        Returns: Json
      }
      store_webhook_event: {
        Args: { p_payload: Json; p_payload_bytes: number }
        Returns: {
          duplicate: boolean
          event_id: string
          status: string
        }[]
      }
      upcoming_calls: {
        Args: { p_from: string; p_household_id: string; p_to: string }
        Returns: {
          attempt: number
          call_session_id: string
          local_time: string
          occurrence_at: string
          relative_id: string
          relative_name: string
          schedule_id: string
          schedule_title: string
          status: string
          timezone: string
        }[]
      }
      update_device_tokens: {
        Args: {
          p_apns_token: string
          p_device_id: string
          p_fcm_token: string
          p_voip_token: string
        }
        Returns: Json
      }
    }
    Enums: {
      [_ in never]: never
    }
    CompositeTypes: {
      [_ in never]: never
    }
  }
}

type DatabaseWithoutInternals = Omit<Database, "__InternalSupabase">

type DefaultSchema = DatabaseWithoutInternals[Extract<keyof Database, "public">]

export type Tables<
  DefaultSchemaTableNameOrOptions extends
    | keyof (DefaultSchema["Tables"] & DefaultSchema["Views"])
    | { schema: keyof DatabaseWithoutInternals },
  TableName extends (DefaultSchemaTableNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals
  }
    ? keyof (DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"] &
        DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Views"])
    : never) = never,
> = DefaultSchemaTableNameOrOptions extends {
  schema: keyof DatabaseWithoutInternals
}
  ? (DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"] &
      DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Views"])[TableName] extends {
      Row: infer R
    }
    ? R
    : never
  : DefaultSchemaTableNameOrOptions extends keyof (DefaultSchema["Tables"] &
        DefaultSchema["Views"])
    ? (DefaultSchema["Tables"] &
        DefaultSchema["Views"])[DefaultSchemaTableNameOrOptions] extends {
        Row: infer R
      }
      ? R
      : never
    : never

export type TablesInsert<
  DefaultSchemaTableNameOrOptions extends
    | keyof DefaultSchema["Tables"]
    | { schema: keyof DatabaseWithoutInternals },
  TableName extends (DefaultSchemaTableNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals
  }
    ? keyof DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"]
    : never) = never,
> = DefaultSchemaTableNameOrOptions extends {
  schema: keyof DatabaseWithoutInternals
}
  ? DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"][TableName] extends {
      Insert: infer I
    }
    ? I
    : never
  : DefaultSchemaTableNameOrOptions extends keyof DefaultSchema["Tables"]
    ? DefaultSchema["Tables"][DefaultSchemaTableNameOrOptions] extends {
        Insert: infer I
      }
      ? I
      : never
    : never

export type TablesUpdate<
  DefaultSchemaTableNameOrOptions extends
    | keyof DefaultSchema["Tables"]
    | { schema: keyof DatabaseWithoutInternals },
  TableName extends (DefaultSchemaTableNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals
  }
    ? keyof DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"]
    : never) = never,
> = DefaultSchemaTableNameOrOptions extends {
  schema: keyof DatabaseWithoutInternals
}
  ? DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"][TableName] extends {
      Update: infer U
    }
    ? U
    : never
  : DefaultSchemaTableNameOrOptions extends keyof DefaultSchema["Tables"]
    ? DefaultSchema["Tables"][DefaultSchemaTableNameOrOptions] extends {
        Update: infer U
      }
      ? U
      : never
    : never

export type Enums<
  DefaultSchemaEnumNameOrOptions extends
    | keyof DefaultSchema["Enums"]
    | { schema: keyof DatabaseWithoutInternals },
  EnumName extends (DefaultSchemaEnumNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals
  }
    ? keyof DatabaseWithoutInternals[DefaultSchemaEnumNameOrOptions["schema"]]["Enums"]
    : never) = never,
> = DefaultSchemaEnumNameOrOptions extends {
  schema: keyof DatabaseWithoutInternals
}
  ? DatabaseWithoutInternals[DefaultSchemaEnumNameOrOptions["schema"]]["Enums"][EnumName]
  : DefaultSchemaEnumNameOrOptions extends keyof DefaultSchema["Enums"]
    ? DefaultSchema["Enums"][DefaultSchemaEnumNameOrOptions]
    : never

export type CompositeTypes<
  PublicCompositeTypeNameOrOptions extends
    | keyof DefaultSchema["CompositeTypes"]
    | { schema: keyof DatabaseWithoutInternals },
  CompositeTypeName extends (PublicCompositeTypeNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals
  }
    ? keyof DatabaseWithoutInternals[PublicCompositeTypeNameOrOptions["schema"]]["CompositeTypes"]
    : never) = never,
> = PublicCompositeTypeNameOrOptions extends {
  schema: keyof DatabaseWithoutInternals
}
  ? DatabaseWithoutInternals[PublicCompositeTypeNameOrOptions["schema"]]["CompositeTypes"][CompositeTypeName]
  : PublicCompositeTypeNameOrOptions extends keyof DefaultSchema["CompositeTypes"]
    ? DefaultSchema["CompositeTypes"][PublicCompositeTypeNameOrOptions]
    : never

export const Constants = {
  public: {
    Enums: {},
  },
} as const

